"""The forward model and what is computed from it, whatever the backend: windows, sub-pixel
shift tables, propagators, initial guesses, geometry, scores against a ground truth."""
