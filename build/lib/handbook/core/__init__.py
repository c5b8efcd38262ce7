"""The core every stage stands on: model loading, chat backends, generation, configs, the resumable
runner, datasets and files, several processes. Nothing here knows a stage of the paper or the toy world."""
