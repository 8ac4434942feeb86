"""The reproduction suite: every table and figure of the paper, from a plan of runs to the HTML report.

The upper of armlib's two floors (README, "Layout"); the library below (``armlib``: the model registry, ARM and
the losses, the confidence indicators, metrics, data, the trainer and its run folder) never imports it. Its own
floors, each importing only those below (``pyproject.toml``'s import-linter contracts):

- the plan: :mod:`~armlib.reproduction.sections` (scales, sections, claims), :mod:`~armlib.reproduction.paper`
  (the paper's printed numbers), :mod:`~armlib.reproduction.parameters`;
- the runs: :mod:`~armlib.reproduction.experiments` (which runs a section needs, trained by the pool or submitit);
- the statistics: :mod:`~armlib.reproduction.stats`, :mod:`~armlib.reproduction.analysis`,
  :mod:`~armlib.reproduction.calibration_files`, then :mod:`~armlib.reproduction.verdict_rules` (per-seed
  results → each claim's verdict), then :mod:`~armlib.reproduction.design`,
  :mod:`~armlib.reproduction.calibration`, :mod:`~armlib.reproduction.results`, :mod:`~armlib.reproduction.plots`;
- the verdicts: :mod:`~armlib.reproduction.verdicts`, then the sections' measurements
  (:mod:`~armlib.reproduction.report_sections`, run by the notebooks through :mod:`~armlib.reproduction.notebook`);
- the report: :mod:`~armlib.reproduction.report`, :mod:`~armlib.reproduction.compare`, and
  :mod:`~armlib.reproduction.reproduce` (``armlib reproduce``: everything above, in order).
"""
