"""The runtime release pipeline: inputs, plan, builds, report, promotion bridge (see pipeline.run_release)."""
