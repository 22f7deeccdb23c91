# boot.py: runs first on every reset. Kept minimal: main.py does the work.
