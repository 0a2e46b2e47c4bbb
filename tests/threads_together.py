"""Run a job on several threads released at the same moment (shared by the thread tests)."""
import threading


def together(n, job):
    """Run ``job(i)`` on ``n`` threads released at the same moment; return results and errors."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def run(i):
        barrier.wait()
        try:
            results[i] = job(i)
        except Exception as exc:  # collected; the callers assert there are none
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
