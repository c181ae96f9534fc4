"""Tests of meta/ (MetaMAML, Task, TaskBatch) and a synthetic task distribution for them."""
