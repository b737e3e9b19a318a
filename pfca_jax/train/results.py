"""WORKDIR/results.json: what a run ended with, written the same way for a completed and a diverged run."""

from pfca_jax.train import reporting


def write_results(workdir: str, meta: dict, session: dict, status: str, time_spent: dict, **outcome) -> dict:
  """Writes and returns {'status': status, **outcome, time_breakdown, goodput, best, config, provenance, sessions}.

  time_spent: this session's `time_breakdown.Clock.summary()`, recorded as the session's 'time'; its
  shares and goodput also go at the top level. sessions: each session's provenance and its 'time' (as
  of its last checkpoint for a session that stopped).

  outcome: what this ending reports (a completed run: its final metrics, length and speed; a diverged
  one: the step, the reason and the last good checkpoint). The run's record (best metrics, config,
  provenance of this session and of every earlier one) is added to either, so both read alike.
  """
  session['time'] = time_spent
  provenance = {k: v for k, v in session.items() if k != 'time'}  # What produced it; 'time' is what it took.
  results = {'status': status, **outcome, 'time_breakdown': time_spent['time_breakdown'],
             'goodput': time_spent['goodput'], 'best': meta['best'], 'config': meta['config'], 'provenance': provenance,
             'sessions': meta['sessions']}
  reporting.write_json(workdir, 'results.json', results)
  return results
