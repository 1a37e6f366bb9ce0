"""Level 1: what every other part builds on: errors, paths, atomic I/O, profiles, configs,
feature caches, progress bars and the resumable training scaffold."""
