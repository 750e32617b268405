"""Stand-in for prefect's decorators on a machine without Prefect (see ../README.md)."""
import logging


def task(fn=None, **_options):
    """`@task` and `@task(...)` leave the function as it is (with a no-op `with_options`)."""
    def wrap(f):
        f.with_options = lambda **_kw: f
        f.fn = f
        return f
    return wrap(fn) if callable(fn) else wrap


flow = task


def get_run_logger():
    return logging.getLogger("niftytune")
