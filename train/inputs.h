// The run's configuration as the sample pipeline's specs (data/pipeline.h):
// what prep did (prep.*), and what the model reads (model.img_size,
// model.in_chans, aug.*, the student's stage.input_* perturbations). Training,
// validation, `eval` and `predict` all build their inputs from these.
#pragma once

#include <string>

#include "data/pipeline.h"
#include "train/config.h"

namespace rz {

namespace data {
struct CacheInfo;
}

// cfg.prep as a PrepSpec; cfg.prep.image_size must be resolved (> 0).
data::PrepSpec prep_spec(const TrainConfig& cfg);

// The input spec for training (train = true: random augmentation and the
// student's perturbations) or validation/inference (eval mode).
data::InputSpec input_spec(const TrainConfig& cfg, bool train);

// With prep.image_size = 0, records the cache's preprocessing in cfg.prep.
// Otherwise checks that the cache was built as cfg.prep says; a mismatch is
// an error naming the key, both values and the cache's index file.
void resolve_prep(TrainConfig& cfg, const data::CacheInfo& cache, const std::string& index_path);

}  // namespace rz
