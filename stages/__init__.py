"""Pipeline stages: each module reads its params.yaml section and writes exactly its dvc.yaml outs."""
