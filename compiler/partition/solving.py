"""Running a CP-SAT solve so that Ctrl-C stays sramflow's: it stops the command, never the search alone.

CP-SAT's own SIGINT handler (catch_sigint_signal, on by default) makes Ctrl-C end the search
early and return its best layout as if the time limit had come, and OR-Tools 9.15 then leaves
the C default handler installed, so a later Ctrl-C kills the process before any clean-up runs.
Here the solver never touches SIGINT; on the main thread the solve runs on a worker thread
while the main thread waits, so Python's handler raises KeyboardInterrupt at once: the search
is stopped, the worker joined, and the interrupt goes on up (no plan is made from it).
"""

from __future__ import annotations

import signal
import threading

from ortools.sat.python import cp_model


def run_solver(solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    """solver.solve(model), its status; KeyboardInterrupt if Ctrl-C came during it."""
    solver.parameters.catch_sigint_signal = False
    if threading.current_thread() is not threading.main_thread():
        return solver.solve(model)
    previous = signal.getsignal(signal.SIGINT)
    try:
        return _on_worker(solver, model)
    finally:
        # Belt and braces: whatever a solver did to SIGINT, Python's handler is back.
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _on_worker(solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    outcome: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["status"] = solver.solve(model)
        except BaseException as error:  # handed to the main thread
            outcome["error"] = error
        finally:
            done.set()

    worker = threading.Thread(target=work, name="cp-sat", daemon=True)
    worker.start()
    try:
        done.wait()
    except KeyboardInterrupt:
        solver.stop_search()
        _wait_out(done)
        worker.join()
        raise
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["status"]


def _wait_out(done: threading.Event) -> None:
    """Wait for a stopped search to return; further Ctrl-Cs change nothing (it is already stopping)."""
    while True:
        try:
            done.wait()
            return
        except KeyboardInterrupt:
            continue
