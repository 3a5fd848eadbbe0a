"""A batch of jobs from the queue to stored vectors: read, load, embed, write.

Each stage and each thing a batch carries lives in its own module; call sites import from
the module that defines what they use."""
