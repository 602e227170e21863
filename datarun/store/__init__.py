"""The organiser's state: the workspace folder, the SQLite database and its migrations, the
content-addressed blob store, backups, and the SQL of each table, one module per concern
(tasks: the task life cycle; submissions, problems, events, scores, hosts' checks, task
events). Rows in, rows out: it knows nothing of kits, executors or the CLI."""
