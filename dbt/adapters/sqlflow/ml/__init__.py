"""The ML layer: numpy arrays in, numpy arrays out. Imports nothing from dbt and holds no connection."""
