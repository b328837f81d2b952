"""Print the mutation score of the last `make mutate` run: killed / total, overall and per module.

Reads mutmut's results under mutants/ (run from the repository root, after `mutmut run`). A mutant
counts as killed when a test failed with it; timeouts, survivors, suspicious ones and mutants no test
reached are listed apart. `--survivors` also prints each surviving mutant's name, for docs/mutation.md.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files

COLUMNS = ("killed", "survived", "timeout", "suspicious", "no tests", "not checked")


def main() -> int:
    if not Path("mutants").is_dir():
        print("No mutants/ folder: run `make mutate` first.", file=sys.stderr)
        return 1
    rows: list[tuple[str, Counter[str]]] = []
    survivors: list[str] = []
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        counts: Counter[str] = Counter()
        for name, exit_code in sorted(data.exit_code_by_key.items()):
            status = status_by_exit_code[exit_code]
            counts[status] += 1
            if status == "survived":
                survivors.append(name)
        rows.append((str(path), counts))
    total: Counter[str] = Counter()
    for _, counts in rows:
        total.update(counts)
    width = max(len(path) for path, _ in rows)
    print(f"{'module'.ljust(width)}  score    killed/total  " + "  ".join(COLUMNS[1:]))
    for path, counts in [*rows, ("all modules", total)]:
        killed, count = counts["killed"], sum(counts.values())
        score = f"{100 * killed / count:5.1f}%" if count else "  -   "
        others = "  ".join(str(counts[c]).rjust(len(c)) for c in COLUMNS[1:])
        print(f"{path.ljust(width)}  {score}  {f'{killed}/{count}'.rjust(12)}  {others}")
    if "--survivors" in sys.argv:
        print()
        print("\n".join(survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
