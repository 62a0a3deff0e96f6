"""Plain-Python core of sav-assets. Nothing under this package may import dagster."""
