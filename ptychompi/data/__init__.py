"""From a config to each rank's measured amplitudes: scan sources, the layout of frames over
ranks, preprocessing and sanity checks (file formats live in :mod:`ptychompi.io`)."""
