"""apflow-server: task trees on schedules, fired exactly once, visible in your calendar."""

__version__ = "0.1.0"
