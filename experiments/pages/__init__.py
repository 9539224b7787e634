"""Feature pages: what one SAE latent does, as SAE dashboards (SAE-Vis, Neuronpedia) show it, computed from a
completed run and written as HTML and PNGs into the run folder.

Modules: page (the page's pydantic model and its computation, `feature_page`, `page_for_run`), runs (which SAE a
run names and which other runs studied the same feature), html (rendering), plots (the PNGs). Importing this
package does not import torch: the CLI reads the page model without it.
"""
from .page import (
    Band,
    Context,
    FeaturePage,
    Histogram,
    LabelScore,
    LogitEntry,
    LogitTable,
    PageConfig,
    SampleInfo,
    feature_acts,
    feature_page,
    page_for_run,
    page_name,
    write_feature_html,
)
from .runs import (
    FEATURE_KINDS,
    RelatedRun,
    RelatedSeed,
    SaeRef,
    load_run,
    locate_sae,
    related_run_dirs,
    related_runs,
    resolve_run,
)

__all__ = ["PageConfig", "FeaturePage", "Context", "Band", "Histogram", "LogitEntry", "LogitTable", "LabelScore",
           "RelatedRun", "RelatedSeed", "SampleInfo", "SaeRef", "FEATURE_KINDS", "feature_page", "page_for_run",
           "write_feature_html", "resolve_run", "related_run_dirs", "related_runs", "locate_sae", "load_run",
           "feature_acts", "page_name"]
