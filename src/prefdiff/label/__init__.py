"""The preference labelling app: pairwise human votes, several raters per comparison, majority
vote, exports. Never imports torch; it talks to the rest of prefdiff only through files (it
reads `prefdiff generate` manifests and pairs files, and writes vote tables, Pick-a-Pic-format
parquet and `summary.json`).

Modules: `db` (engine, SQLite pragmas, Alembic migrations), `schema` (tables), `sources`
(manifest / pairs readers), `studies` (creating studies and raters), `assign` (handing out
comparisons, recording votes), `export`,
`report` (progress and results of a study), `writer` (group commit of the rater endpoints'
writes), `security`, `app` / `admin` (the FastAPI web app) and `cli` (`prefdiff label ...`).
Majority, agreement and the Wilson interval are `prefdiff.stats`, shared with `prefdiff compare`.
"""
