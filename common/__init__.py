"""The bottom layer: helpers every package shares, one implementation each.

    files.py     sha256_file, write_atomic (temp + fsync + os.replace + fsync of the folder), durable copy and append
    lock.py      HolderLock: a filelock plus a record naming its holder, for the message of whoever waits
    timing.py    Stopwatch: wall seconds per stage
    versions.py  library_versions: the installed versions of named packages
    home.py      resolve_home: the runtime home
    schedule.py  the daily schedule's cron and time zone
    table.py     format_table: a plain-text table
    cli.py       run_app: a typer app as a command line (exit statuses of --help and usage errors)

Arrows point one way: flows -> tasks -> adapters_registry -> common. Nothing here imports any of
them (tests/adapters_registry/test_imports.py checks).
"""
