"""Batch queue: many scans on many devices through MPI sub-communicators (``ptychompi queue``).

``store`` persists the jobs (SQLite), ``jobs`` builds job configs from YAML, ptychopy command
strings and MDA files, ``dispatch`` runs the coordinator and the worker groups under MPI,
``inbox`` turns files dropped into a folder into jobs, ``cli`` is the command line.
"""
