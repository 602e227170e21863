"""Moving tasks: the queue order, the dispatcher and its per-host lanes, collecting and
checking results, `train`, `status`, and the operator's retry, cancel and logs."""
