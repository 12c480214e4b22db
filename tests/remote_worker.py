"""Child process for the remote-cache tests: ``python tests/remote_worker.py MODE ROOT URL ...``.

- ``build ROOT VARIANT``: realize the test pipeline (VARIANT: "a" or "b", two
  targets sharing their dependencies; "nd", nondeterministic; "many", many
  files) and print its RRef. Remote variables ($LIGHTSTORE_PUSH, ...) apply.
- ``pull ROOT URL REF...``: pull and print the RRefs added as JSON.
- ``push ROOT URL REF...``: push, after waiting for ``ROOT/../go`` if
  ``--wait`` is given first; prints the report as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from remote_helpers import many_files_stage, pipeline

from lightstore import instantiate, realize1
from lightstore.facade import Store


def main(argv: list[str]) -> int:
    wait = argv[:1] == ["--wait"]
    if wait:
        argv = argv[1:]
    mode, root, *rest = argv
    store = Store.open(root, create=True)
    if mode == "build":
        variant = rest[0]
        if variant == "many":
            print(realize1(instantiate(many_files_stage, S=store.settings)))
        elif variant == "nd":  # random train and report: every store builds its own
            print(realize1(instantiate(pipeline, S=store.settings, nondeterministic=True)))
        else:
            scale = 1 if variant == "a" else 2
            print(realize1(instantiate(pipeline, S=store.settings, scale=scale)))
        return 0
    if mode == "push":
        url, *refs = rest
        if wait:
            go = os.path.join(os.path.dirname(root), "go")
            while not os.path.exists(go):
                time.sleep(0.002)
        report = store.push(url, refs, jobs=4)
        print(json.dumps({"uploaded": report.uploaded, "blobs": report.blobs_uploaded}))
        return 0
    if mode == "pull":
        url, *refs = rest
        print(json.dumps(store.pull(url, refs, jobs=4)))
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
