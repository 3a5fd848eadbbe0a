"""Documents parsed outside the worker's process: untrusted bytes never run through a parser
in the process that holds the database connections, the models and the leases.

  budgets   what one parse may spend (wall time, CPU, memory), from the settings and its size
  wire      the frames between the worker and a parse process; an answer checked, never trusted
  child     a parse process's own loop: `python -m worker.pipeline.parsing.child`
  process   one parse process from the worker's side: started, fed, timed, killed, replaced
  service   ParseService: the pool of parse processes, parses scheduled fairly across targets
            (suspects' retries apart), their results kept until the row's job comes back

The load stage (worker/pipeline/chunks/parses.py) asks for its documents' parses, every
target's, and waits a short while; a parse not done by then goes on in the background and the
row is postponed (docs/documents.md#untrusted-bytes).
"""
