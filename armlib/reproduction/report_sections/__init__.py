"""One module per report section: ``measure(...)`` trains or reuses the runs the section needs and writes its
result files (``results/<key>*.csv``), ``plot(...)`` draws its figure (``figures/<key>.png``).

A section is one entry in the manifest (:data:`armlib.reproduction.sections.SECTIONS`: heading, the paper's claim, the runs it
needs, its threshold claims), one module here and one notebook ``notebooks/<key>.ipynb`` that calls the two.
Tables 1–6 share :mod:`~armlib.reproduction.report_sections.paper_tables` (their rows and claims are manifest data);
:mod:`~armlib.reproduction.report_sections._runs` holds what the figure sections share (the analysed run, its pixels).
Verdicts are not computed here: a section passes the quantities it measured to
:func:`armlib.reproduction.verdicts.thresholds`, which applies every threshold line of its manifest entry; the comparisons'
come from :func:`armlib.reproduction.verdicts.write` once every section has run.
"""
