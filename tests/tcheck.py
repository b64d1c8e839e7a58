"""tcheck.py - the ok/FAIL lines and the closing "N passed, N failed" line that
tests/run.sh reads, for the Python tests (test_profile.py, test_report.py,
test_top.py)."""
import sys

counts = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    """One check: "ok   name", or "FAIL name: detail" (detail cut to 500 characters)."""
    if ok:
        counts["passed"] += 1
        print("ok   " + name)
    else:
        counts["failed"] += 1
        print("FAIL " + name + (": " + str(detail)[:500] if detail else ""))


def finish():
    """The summary line, and exit 1 if a check failed."""
    print("%d passed, %d failed" % (counts["passed"], counts["failed"]))
    sys.exit(1 if counts["failed"] else 0)
