"""The organiser's state: the workspace folder, the SQLite database and its migrations, the
content-addressed blob store, backups. Knows nothing of problems, hosts or executors."""
