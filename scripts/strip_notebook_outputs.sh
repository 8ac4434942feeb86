#!/bin/sh
# Strip the outputs of notebooks/*.ipynb from what git stages and diffs (nbstripout as a git filter; .gitattributes
# names the files), so running a notebook in JupyterLab never dirties a commit. tests/notebooks/ is left alone: its
# outputs are the nbval goldens. Run by `make venv` from the checkout's root; $1: the venv's bin folder.
set -e
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "not a git checkout: notebook output stripping not set up"; exit 0
fi
bin=$(cd "${1:-.venv/bin}" && pwd -P)
git config filter.nbstripout.clean "'$bin/python' -m nbstripout --keep-id"
git config filter.nbstripout.smudge cat
git config filter.nbstripout.required true
git config diff.ipynb.textconv "'$bin/python' -m nbstripout --keep-id -t"
# A fresh clone's files are "racily clean" (written in the second its index was), so git re-reads each notebook
# through the filter on every status until the index is rewritten; a dozen nbstripout starts take 25-30 s, longer
# than armlib.paths.git_revision waits, and every record of a fresh clone's `make report` went unstamped. One
# refresh now runs the filter once and stores the result.
git update-index -q --refresh >/dev/null || true
