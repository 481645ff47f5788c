"""Types and errors shared by every layer."""
