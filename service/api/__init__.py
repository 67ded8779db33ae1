"""The HTTP layer: routes (dehaze, depth, density, health, metrics), their schemas, dependencies and middleware.

Nothing here touches the model: the routes check and submit uploads to the job queue and wait for results.
"""
