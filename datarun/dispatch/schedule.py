"""Which queued tasks start next, and how many tasks each host holds.

Plain functions over the database and the host registry, so the order is tested as data
(tests/test_scheduling.py) without a dispatcher or a host.
"""


def selection(problem: str | None, submission: int | None) -> tuple[str, list]:
    """The SQL that narrows a tasks-join-submissions query to a problem and/or submission."""
    where, args = "", []
    if problem:
        where += " AND s.problem = ?"
        args.append(problem)
    if submission is not None:
        where += " AND s.id = ?"
        args.append(submission)
    return where, args


def seats(host) -> int:
    """Tasks a host may hold: its slots, and as many again waiting in its inbox, so its
    runner starts the next task the moment a slot frees rather than a round trip later.
    (One waiting task per host measured no better on bench/makespan and worse on
    bench/overhead.) A host with a memory cap holds only what it runs: the cap counts
    every task held."""
    return host.slots if host.memory else 2 * host.slots


def queued_tasks(db, limit: int, problem: str | None, submission: int | None) -> list[dict]:
    """The next queued tasks, in the order they should start.

    First one fold of each submission that has not run yet, oldest submission first: a
    participant hears early whether their code runs, and the fold's time tells how long
    the others will take. Then the tasks whose submission has a finished fold, the
    longest expected first, so the short ones fill the slots at the end of a batch
    instead of a long one starting last. Then the rest, by submission and fold.
    """
    where, args = selection(problem, submission)
    sql = f"""
        WITH waiting AS (
            SELECT t.submission, MIN(t.fold) AS first_fold FROM tasks t
            JOIN submissions s ON s.id = t.submission
            WHERE t.state = 'queued'{where} GROUP BY t.submission),
        seen AS (
            SELECT t.submission, SUM(t.state != 'queued') AS tried,
                   AVG(CASE WHEN t.state IN ('done', 'failed') THEN t.wall_time END) AS expected
            FROM tasks t JOIN waiting w ON w.submission = t.submission GROUP BY t.submission)
        SELECT t.id, t.submission, t.fold, t.attempt, s.problem, s.files FROM tasks t
        JOIN submissions s ON s.id = t.submission
        JOIN waiting w ON w.submission = t.submission
        JOIN seen ON seen.submission = t.submission
        WHERE t.state = 'queued'
        ORDER BY CASE WHEN seen.tried = 0 AND t.fold = w.first_fold THEN 0
                      WHEN seen.expected IS NOT NULL THEN 1 ELSE 2 END,
                 -COALESCE(seen.expected, 0), t.submission, t.fold
        LIMIT ?"""
    return list(db.query(sql, args + [limit]))


def any_queued(db, problem: str | None, submission: int | None) -> bool:
    where, args = selection(problem, submission)
    return db.execute(
        "SELECT 1 FROM tasks t JOIN submissions s ON s.id = t.submission "
        f"WHERE t.state = 'queued'{where} LIMIT 1", args).fetchone() is not None
