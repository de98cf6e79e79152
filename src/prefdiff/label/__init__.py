"""The preference labelling app. Never imports torch."""
