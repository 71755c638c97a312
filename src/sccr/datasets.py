"""Data sets shipped with sccr."""

from __future__ import annotations

from importlib.resources import files

import anndata as ad


def worm_neuron() -> ad.AnnData:
    """Worm Neuron: neurons of *Caenorhabditis elegans* (Cao et al. 2017), 4186 cells x 13488 genes, raw counts.

    One of the six data sets of the scCR paper; ``obs['celltype']`` holds 10
    annotated types (integer codes as strings). Redistributed from
    ttgump/scDeepCluster (Apache-2.0); provenance in ``uns['source']``.
    """
    return ad.read_h5ad(files("sccr").joinpath("data/worm_neuron.h5ad"))
