"""Solutions to the notebooks' exercises (`solutions/exercises.py`); CI checks each one with `kit.exercises`."""
