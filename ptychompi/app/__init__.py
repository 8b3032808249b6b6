"""What a user drives: the API (`Reconstruction`), the command line, runs, checkpoints,
provenance, live status, notifications, job submission, run --follow, the queue and
the GUI."""
