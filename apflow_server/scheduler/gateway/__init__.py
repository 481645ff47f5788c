"""The import paths of earlier releases (and of the user guide), kept working.

What lived here now lives in `apflow_server.exports` (the iCalendar feed, crontab lines,
Kubernetes CronJobs) and `apflow_server.webhooks` (signatures, the verify hook).
"""

from apflow_server.exports.ical import ICalExporter, generate_ical_feed_url

__all__ = ["ICalExporter", "generate_ical_feed_url"]
