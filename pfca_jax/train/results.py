"""WORKDIR/results.json: what a run ended with, written the same way for a completed and a diverged run."""

from pfca_jax.train import reporting


def write_results(workdir: str, meta: dict, session: dict, status: str, **outcome) -> dict:
  """Writes and returns {'status': status, **outcome, best, config, provenance, sessions}.

  sessions: each session's provenance and, under 'time', its `time_breakdown` summary (as of its last
  checkpoint for a session that stopped).

  outcome: what this ending reports (a completed run: its final metrics, length and speed; a diverged
  one: the step, the reason and the last good checkpoint). The run's record (best metrics, config,
  provenance of this session and of every earlier one) is added to either, so both read alike.
  """
  provenance = {k: v for k, v in session.items() if k != 'time'}  # What produced it; 'time' is what it took.
  results = {'status': status, **outcome, 'best': meta['best'], 'config': meta['config'], 'provenance': provenance,
             'sessions': meta['sessions']}
  reporting.write_json(workdir, 'results.json', results)
  return results
