"""Schedules for the world outside: the iCalendar feed, crontab lines, Kubernetes CronJobs."""
