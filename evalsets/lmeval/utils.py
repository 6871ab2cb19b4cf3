"""process_docs for the lm-eval tasks in this folder (lm_eval imports it by name from --include_path)."""


def boolean_expressions(dataset):
    """The scored boolean_expressions rows of the BBH sample: its other tasks and its exemplars left out."""
    return dataset.filter(lambda row: row["task"] == "boolean_expressions" and not row["exemplar"])
