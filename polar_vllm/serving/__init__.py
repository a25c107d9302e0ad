"""Serving-side PoLar: the predictor in the front end, metrics, and the program route."""
