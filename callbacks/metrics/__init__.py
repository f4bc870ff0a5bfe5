"""The metrics as plain functions of features and labels, for the callbacks, the studies and other projects:
Fréchet distance (with bootstrap interval and held-out floor), kernel distance, precision/recall,
memorization, kNN and linear probe accuracy, membership-detection AUC, representation statistics, the
shape of a probe curve over noise levels (and its bootstrap verdict), top weight rows against the data;
and the reference classifier whose features make the generative metrics meaningful offline."""
