# caiclust: start-and-import probe. Imports the modules named on the command
# line (as the user's program would), prints one JSON line of Python-level
# facts, then waits until its standard input closes so that the parent can
# read what this process has mapped. Standard library only.
import json
import sys
import threading

facts = {"imported": [], "import_errors": {}}
for name in sys.argv[1:]:
    try:
        __import__(name)
        facts["imported"].append(name)
    except BaseException as exc:  # report every failure, even SystemExit
        facts["import_errors"][name] = "%s: %s" % (type(exc).__name__, exc)

try:
    import multiprocessing

    facts["default_start_method"] = multiprocessing.get_start_method(allow_none=False)
except Exception:
    facts["default_start_method"] = None
facts["active_threads"] = threading.active_count()

cv2 = sys.modules.get("cv2")
facts["cv2_num_threads"] = None
if cv2 is not None:
    try:
        facts["cv2_num_threads"] = int(cv2.getNumThreads())
    except Exception:
        pass

facts["numba_threading_layer"] = None
if "numba" in sys.modules:
    try:
        import numba

        # Raises ValueError until a parallel function has run: no layer is
        # chosen yet, which is a fact too (left as null).
        facts["numba_threading_layer"] = numba.threading_layer()
    except Exception:
        pass

sys.stdout.write(json.dumps(facts) + "\n")
sys.stdout.flush()
try:
    sys.stdin.read()
except BaseException:
    pass
