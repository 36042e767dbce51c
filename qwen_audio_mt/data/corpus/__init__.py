"""The embedded corpus: every registry task generated offline, labels exact by construction.

Modules: base.py (Item, the generator registry), speech.py (espeak-ng), fsdd.py (real spoken
digits from the shared data root), sound.py (procedural events and scenes), music.py (additive,
FM and plucked-string synthesis). build.py turns generators into shards through data.ingest.
"""
