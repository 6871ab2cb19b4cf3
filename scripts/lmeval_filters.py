"""lm-evaluation-harness's own verdicts on given responses: runs in .venv-lmeval, not in .venv.

    .venv-lmeval/bin/python scripts/lmeval_filters.py < request.json > samples.json

The request is `{"include_path": DIR, "tasks": {NAME: [[doc_id, text], …], …}}`. Each task is
loaded by lm_eval's TaskManager from the YAML files under DIR (its dataset read offline from our
committed JSONL), each response goes through every filter pipeline of the task (FilterEnsemble.apply
on lm_eval Instances, as the evaluator does after generation) and the task's process_results (its
metric). The reply is a JSON list in the shape of lm_eval's `--log_samples` lines: task, doc_id,
doc, target, resps, filtered_resps, filter and the metric values, one per response and filter. So the
cross-check (scripts/lmeval_crosscheck.py) reads fed responses and generated ones the same way.
"""

from __future__ import annotations

import json
import sys


def verdicts(task, task_name: str, responses: list[tuple[int, str]]) -> list[dict]:
    """The logged samples of `responses` to the loaded lm_eval `task`."""
    from lm_eval.api.instance import Instance

    docs = list(task.eval_docs)
    instances = []
    for doc_id, text in responses:
        doc = docs[doc_id]
        instance = Instance(
            request_type=task.OUTPUT_TYPE,
            doc=doc,
            arguments=(task.doc_to_text(doc),),
            idx=0,
            metadata=(task_name, doc_id, 1),
        )
        instance.resps.append(text)
        instances.append(instance)
    for ensemble in task._filters:  # the evaluator's task.apply_filters(), on our instances
        ensemble.apply(instances)
    samples = []
    for ensemble in task._filters:
        for instance in instances:
            filtered = instance.filtered_resps[ensemble.name]
            samples.append(
                {
                    "task": task_name,
                    "doc_id": instance.doc_id,
                    "doc": instance.doc,
                    "target": task.doc_to_target(instance.doc),
                    "resps": [instance.resps],
                    "filtered_resps": [filtered],
                    "filter": ensemble.name,
                    **task.process_results(instance.doc, [filtered]),
                }
            )
    return samples


def main() -> None:
    from lm_eval.tasks import TaskManager

    request = json.load(sys.stdin)
    tasks = TaskManager(include_path=request["include_path"]).load(list(request["tasks"]))["tasks"]
    samples = []
    for name, responses in request["tasks"].items():
        samples += verdicts(tasks[name], name, [tuple(r) for r in responses])
    json.dump(samples, sys.stdout, default=str)


if __name__ == "__main__":
    main()
