-- `adapters` and `train_runs` were never written. An adapter's provenance (when and on what
-- it was trained, its held-out figures and promote gate) lives in its folder's codeloop.json,
-- which the server's registry reads and the dashboard shows; a training run's in
-- data_dir/runs/ID/run.json. One home each, so nothing here can disagree with them.
DROP TABLE adapters;
DROP TABLE train_runs;
