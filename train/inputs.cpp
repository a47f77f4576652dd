#include "train/inputs.h"

#include <algorithm>

#include "data/cache.h"
#include "engine/error.h"

namespace rz {

data::PrepSpec prep_spec(const TrainConfig& cfg) {
  RZ_CHECK(cfg.prep.image_size > 0,
           "config: prep.image_size is 0 (not yet taken from a prep cache): the preprocessing is unknown");
  return {.size = cfg.prep.image_size,
          .clahe = cfg.prep.clahe,
          .clahe_clip = cfg.prep.clahe_clip,
          .clahe_tiles_x = static_cast<int>(cfg.prep.clahe_tiles_x),
          .clahe_tiles_y = static_cast<int>(cfg.prep.clahe_tiles_y)};
}

data::InputSpec input_spec(const TrainConfig& cfg, bool train) {
  data::InputSpec s;
  data::AugmentConfig& a = s.aug;
  a.out_size = cfg.model.img_size;
  a.train = train;
  a.eval_crop_fraction = cfg.aug.eval_crop;
  a.crop_scale = {cfg.aug.scale_min, cfg.aug.scale_max};
  a.crop_ratio = {cfg.aug.ratio_min, cfg.aug.ratio_max};
  a.hflip_prob = cfg.aug.hflip_p;
  a.rotate_prob = cfg.aug.rotate_p;
  a.rotate_deg = {-cfg.aug.rotate_deg, cfg.aug.rotate_deg};
  a.brightness_contrast_prob = cfg.aug.brightness_contrast_p;
  a.brightness_range = {-cfg.aug.brightness, cfg.aug.brightness};
  a.contrast_range = {-cfg.aug.contrast, cfg.aug.contrast};
  a.dropout_prob = cfg.aug.dropout_p;
  a.max_holes = std::max<int64_t>(1, cfg.aug.dropout_holes);
  a.hole_height_frac = {cfg.aug.dropout_size / 2, cfg.aug.dropout_size};
  a.hole_width_frac = {cfg.aug.dropout_size / 2, cfg.aug.dropout_size};
  data::check_augment_config(a);
  s.channels = cfg.model.in_chans;
  if (train) {
    s.input_noise = cfg.stage.input_noise;
    s.input_dropout = cfg.stage.input_dropout;
  }
  return s;
}

void resolve_prep(TrainConfig& cfg, const data::CacheInfo& cache, const std::string& index_path) {
  const data::PrepSpec have = data::prep_spec_of(cache);
  auto& p = cfg.prep;
  if (p.image_size == 0) {
    p.image_size = have.size;
    p.clahe = have.clahe;
    if (have.clahe) {
      p.clahe_clip = have.clahe_clip;
      p.clahe_tiles_x = have.clahe_tiles_x;
      p.clahe_tiles_y = have.clahe_tiles_y;
    }
    return;
  }
  const data::PrepSpec want = prep_spec(cfg);
  if (want == have) return;
  RZ_THROW("config: prep.* says the images were prepared at ", want.str(), ", but the cache ",
           index_path, " holds ", have.str(),
           ": point data.cache_dir at a cache made with those settings (ranzcr prep --size/--clahe-clip/"
           "--clahe-tiles/--no-clahe), or set prep.image_size=0 to take the cache's settings");
}

}  // namespace rz
