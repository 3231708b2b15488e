"""Training shared by both training stages: the runtime (device, precision, strategy), the fit
loop with its resumable work folder, and the session that ties a run to its outputs and MLflow."""
