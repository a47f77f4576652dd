#include "train/predict.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <thread>

#include "data/cache.h"
#include "data/csv.h"
#include "data/loader.h"
#include "data/paths.h"
#include "data/pipeline.h"
#include "data/ranzcr_csv.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "train/checkpoint.h"
#include "train/compute.h"
#include "train/config.h"
#include "train/inputs.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace rz {

namespace {

using Clock = std::chrono::steady_clock;

std::string find_image(const fs::path& dir, const std::string& uid) {
  for (const char* ext : {".jpg", ".jpeg", ".png"}) {
    const fs::path p = data::path_in_folder(dir.string(), uid, ext, "image");
    if (fs::exists(p)) return p.string();
  }
  RZ_THROW("no image for '", uid, "' in ", dir.string(), " (looked for .jpg, .jpeg, .png)");
}

// One model of the ensemble: its weights, and the config that says what it reads.
struct Member {
  std::string name;     // the run folder, or the weights file
  std::string weights;  // the file its weights come from
  TrainConfig cfg;
  std::shared_ptr<ResNet> model;
  Compute compute;
};

// A run's config as its checkpoint saved it (config.toml beside it for a
// plain weights file), with the preprocessing resolved.
TrainConfig run_config(const std::string& run, const std::string& weights, const PredictOptions& opt,
                       const std::function<void(const std::string&)>& log) {
  TrainConfig cfg;
  std::map<std::string, std::string> meta;
  read_safetensors_header(weights, &meta);
  if (is_ranzcr_checkpoint(meta, weights)) {
    const TrainState st = read_checkpoint_state(weights);
    RZ_CHECK(!st.config_toml.empty(), weights, " holds no saved configuration: pass it with --weights and "
             "the explicit --model/--img-size/--in-chans/--prep-size options");
    cfg = parse_config(st.config_toml, weights + " (its saved config)");
  } else {
    const std::string toml = (fs::path(run) / "config.toml").string();
    RZ_CHECK(fs::is_regular_file(toml), weights, " is a plain weights file and ", toml,
             " is missing: pass it with --weights and the explicit --model/--img-size/--in-chans options");
    cfg = load_config(toml);
    log("predict: " + weights + " is plain weights; its model and preprocessing come from " + toml);
  }
  if (cfg.prep.image_size == 0) {
    // Written before runs recorded prep.*: the cache the run trained on says it.
    const std::string index = data::cache_index_path(cfg.data.cache_dir, "train");
    RZ_CHECK(!cfg.data.cache_dir.empty() && fs::is_regular_file(index), "the config of ", weights,
             " does not record its preprocessing (prep.image_size = 0) and its cache index ", index,
             " is not there to say it: pass the weights with --weights and --prep-size/--clahe-clip/--no-clahe");
    resolve_prep(cfg, data::ImageCache::open(cfg.data.cache_dir, "train").info(), index);
    log("predict: " + weights + " predates recorded preprocessing; using its cache's: " + prep_spec(cfg).str());
  }
  // What a run says about its inputs cannot be overridden.
  auto refuse = [&](bool given, const char* flag, const std::string& key, const std::string& value) {
    RZ_CHECK(!given, "predict --run: the run says ", key, " = ", value, " (", weights, "); ", flag,
             " cannot override it: the model would read inputs it was never validated on");
  };
  refuse(opt.model.has_value(), "--model", "model.name", cfg.model.name);
  refuse(opt.img_size.has_value(), "--img-size", "model.img_size", std::to_string(cfg.model.img_size));
  refuse(opt.in_chans.has_value(), "--in-chans", "model.in_chans", std::to_string(cfg.model.in_chans));
  refuse(opt.prep_size.has_value(), "--prep-size", "prep.image_size", std::to_string(cfg.prep.image_size));
  refuse(opt.clahe.has_value() || opt.clahe_clip.has_value() || opt.clahe_tiles.has_value(),
         "the CLAHE options", "prep", prep_spec(cfg).str());
  refuse(opt.eval_crop.has_value(), "--eval-crop", "aug.eval_crop", std::to_string(cfg.aug.eval_crop));
  if (cfg.stage.kind == "teacher")
    log("predict: note: " + run + " is a teacher run: it was trained and validated on annotated images, "
        "and predict reads plain ones");
  return cfg;
}

// --weights: the explicit options as a config.
TrainConfig weights_config(const PredictOptions& opt) {
  TrainConfig cfg;
  cfg.model.name = opt.model.value_or("seresnet152d");
  cfg.model.img_size = opt.img_size.value_or(512);
  cfg.model.in_chans = opt.in_chans.value_or(3);
  cfg.prep.image_size = opt.prep_size.value_or(cfg.model.img_size);
  cfg.prep.clahe = opt.clahe.value_or(true);
  cfg.prep.clahe_clip = opt.clahe_clip.value_or(2.0);
  cfg.prep.clahe_tiles_x = cfg.prep.clahe_tiles_y = opt.clahe_tiles.value_or(8);
  cfg.aug.eval_crop = opt.eval_crop.value_or(1.0);
  cfg.data.dir = cfg.data.cache_dir = ".";  // unused; validate_config checks the rest
  validate_config(cfg);
  return cfg;
}

std::string checkpoint_path(const std::string& run, const std::string& ckpt, size_t runs) {
  if (ckpt == "best" || ckpt == "last") return (fs::path(run) / (ckpt + ".ckpt")).string();
  RZ_CHECK(runs == 1, "predict: --ckpt ", ckpt, " names one file but ", runs,
           " runs were given: with several runs, --ckpt is best or last");
  return ckpt;
}

// What a member reads; members that read the same inputs share one pass over the images.
std::string input_key(const TrainConfig& c) {
  return prep_spec(c).str() + " -> " + std::to_string(c.model.img_size) + " px x" +
         std::to_string(c.model.in_chans) + ", eval crop " + std::to_string(c.aug.eval_crop);
}

Tensor hflip_nhwc(const Tensor& x) {
  Tensor out = Tensor::empty_like(x);
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  for (int64_t r = 0; r < B * H; ++r)
    for (int64_t xx = 0; xx < W; ++xx)
      std::copy_n(src + (r * W + (W - 1 - xx)) * C, C, dst + (r * W + xx) * C);
  return out;
}

}  // namespace

PredictReport run_predict(const PredictOptions& opt) {
  const auto t0 = Clock::now();
  const auto log = opt.log ? opt.log : [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  RZ_CHECK(opt.runs.empty() != opt.weights.empty(),
           "predict takes either --run RUN_DIR (repeatable) or --weights FILE, ",
           opt.runs.empty() ? "and got neither" : "not both");
  RZ_CHECK(!opt.out.empty() && !opt.images_dir.empty(), "predict needs an images folder and an output path");
  RZ_CHECK(opt.ensemble == "prob" || opt.ensemble == "logit", "predict: --ensemble must be prob or logit, got '",
           opt.ensemble, "'");
  RZ_CHECK(opt.batch >= 0 && opt.workers >= 0, "predict: --batch and --workers must be >= 0");
  RZ_CHECK(fs::is_directory(opt.images_dir), "images folder ", opt.images_dir, " does not exist");
  std::vector<std::string> uids;
  if (!opt.sample_submission.empty()) {
    uids = read_ranzcr_sample_submission(opt.sample_submission);
  } else {
    for (const auto& e : fs::directory_iterator(opt.images_dir)) {
      const auto ext = e.path().extension().string();
      if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") uids.push_back(e.path().stem().string());
    }
    std::sort(uids.begin(), uids.end());
  }
  RZ_CHECK(!uids.empty(), "no images to predict in ", opt.images_dir);
  std::vector<std::string> files;  // every image is found before any model runs
  for (const auto& uid : uids) files.push_back(find_image(opt.images_dir, uid));

  // The models.
  std::vector<Member> members;
  if (!opt.weights.empty()) {
    members.push_back({opt.weights, opt.weights, weights_config(opt), nullptr, {}});
  } else {
    for (const auto& run : opt.runs) {
      const std::string w = checkpoint_path(run, opt.ckpt, opt.runs.size());
      RZ_CHECK(fs::is_regular_file(w), "predict: ", w, " does not exist (--ckpt best, last or a file)");
      members.push_back({run, w, run_config(run, w, opt, log), nullptr, {}});
    }
  }
  for (auto& m : members) {
    std::string precision = opt.precision;
    const bool cuda = parse_device(opt.device).is_cuda();
    if (precision.empty()) precision = cuda && !opt.runs.empty() ? m.cfg.run.precision : "fp32";
    if (!opt.runs.empty() && precision != m.cfg.run.precision)
      log("predict: " + m.name + " runs in " + precision + " (it trained in " + m.cfg.run.precision + ")");
    m.compute = resolve_compute(opt.device, precision, cuda_settings(m.cfg));
    m.model = build_model(m.cfg, 0);
    load_timm_state_dict(*m.model, read_model_weights(m.weights));
    m.model->to(m.compute.device);
    m.model->eval();
  }
  const int64_t batch = opt.batch > 0 ? opt.batch : (opt.runs.empty() ? 16 : members[0].cfg.train.batch);
  const int workers = opt.workers > 0 ? static_cast<int>(opt.workers)
                                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t views = opt.tta_hflip ? 2 : 1;
  const int64_t n = static_cast<int64_t>(uids.size());
  const int64_t M = static_cast<int64_t>(members.size());
  {
    std::string what = "predict: " + std::to_string(n) + " images, " + std::to_string(M) + " model(s) x " +
                       std::to_string(views) + " view(s), " +
                       (opt.ensemble == "prob" ? "mean of probabilities" : "sigmoid of the mean logit") +
                       ", batch " + std::to_string(batch) + ", " + std::to_string(workers) + " decode threads, on " +
                       members[0].compute.str();
    log(what);
  }

  // [image * 11 + label], summed over (model, view).
  std::vector<double> sum_prob(static_cast<size_t>(n * kNumRanzcrLabels), 0.0), sum_logit(sum_prob.size(), 0.0);
  NoGradGuard no_grad;
  double pass_seconds = 0;
  std::vector<bool> done(members.size(), false);
  for (size_t g = 0; g < members.size(); ++g) {
    if (done[g]) continue;
    // The members that read exactly these inputs.
    const std::string key = input_key(members[g].cfg);
    std::vector<size_t> group;
    for (size_t k = g; k < members.size(); ++k)
      if (!done[k] && input_key(members[k].cfg) == key) group.push_back(k), done[k] = true;
    const TrainConfig& c = members[g].cfg;
    const int64_t S = c.model.img_size, C = c.model.in_chans;
    log("predict: inputs " + key + " for " + std::to_string(group.size()) + " model(s)");
    std::vector<int64_t> samples(static_cast<size_t>(n));
    std::iota(samples.begin(), samples.end(), int64_t{0});
    data::Loader loader(samples,
                        {.batch = batch, .shuffle = false, .drop_last = false, .seed = 0, .workers = workers,
                         .prefetch = 2, .paired = false},
                        {S, S, C}, data::make_file_transform(files, prep_spec(c), input_spec(c, false)));
    const auto p0 = Clock::now();
    auto last_note = p0;
    int64_t seen = 0;
    ProgressLine pass_progress("predict", n, "img", opt.progress);
    loader.start_epoch(0);
    while (auto b = loader.next()) {
      const int64_t bn = static_cast<int64_t>(b->indices.size());
      const int64_t first = b->indices.front();
      Tensor flipped;
      if (opt.tta_hflip) flipped = hflip_nhwc(b->images);
      for (size_t k : group) {
        Member& m = members[k];
        for (int64_t v = 0; v < views; ++v) {
          const std::vector<float> logits =
              host_floats(m.model->forward(to_compute(v == 0 ? b->images : flipped, m.compute)));
          for (size_t j = 0; j < logits.size(); ++j) {
            const float l = logits[j];
            const size_t image = static_cast<size_t>(first) + j / kNumRanzcrLabels;
            // A NaN logit comes from the weights (or a broken input), never from the
            // arithmetic here: say which, before a submission full of NaN is written.
            RZ_CHECK(std::isfinite(l), "the output of ", m.name, " for image '", uids[image], "' (label '",
                     kRanzcrLabels[j % kNumRanzcrLabels], "') is ", l, ": the weights in ", m.weights,
                     " or this image produce non-finite logits; nothing was written to ", opt.out);
            const size_t at = static_cast<size_t>(first * kNumRanzcrLabels) + j;
            sum_prob[at] += 1.0 / (1.0 + std::exp(-static_cast<double>(l)));
            sum_logit[at] += static_cast<double>(l);
          }
        }
      }
      seen += bn;
      pass_progress.update(seen);
      const double sec = std::chrono::duration<double>(Clock::now() - p0).count();
      if (opt.progress == ProgressMode::off &&
          (std::chrono::duration<double>(Clock::now() - last_note).count() >= 10.0 || seen == n)) {
        char line[160];
        std::snprintf(line, sizeof line, "predict: %lld/%lld images, %.1f images/s", static_cast<long long>(seen),
                      static_cast<long long>(n), static_cast<double>(seen) / std::max(sec, 1e-9));
        log(line);
        last_note = Clock::now();
      }
    }
    pass_seconds += std::chrono::duration<double>(Clock::now() - p0).count();
  }

  std::vector<float> probs(sum_prob.size());
  const double views_total = static_cast<double>(M * views);
  for (size_t k = 0; k < probs.size(); ++k) {
    if (opt.ensemble == "prob" && M * views > 1) {
      probs[k] = static_cast<float>(sum_prob[k] / views_total);
    } else {
      // The mean logit through validation's float sigmoid: one model without
      // TTA writes exactly the probabilities `ranzcr eval` scores.
      const float mean = static_cast<float>(sum_logit[k] / views_total);
      probs[k] = 1.0f / (1.0f + std::exp(-mean));
    }
  }
  write_ranzcr_submission(opt.out, uids, probs);
  PredictReport r;
  r.images = n;
  r.models = M;
  r.views = views;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.images_per_second = static_cast<double>(n) / std::max(pass_seconds, 1e-9);
  return r;
}

AucReport score_submission(const std::string& pred, const std::string& truth) {
  for (const std::string& f : {pred, truth})
    RZ_CHECK(!fs::is_directory(f), f, " is a folder; score takes CSV files (--pred: a submission, "
             "--truth: a train.csv)");
  const RanzcrTrainSet t = read_ranzcr_train(truth);
  RZ_CHECK(!t.studies.empty(), truth, ": no studies to score against (header only)");
  const CsvTable p = read_csv(pred);
  const int uid_col = p.column("StudyInstanceUID");
  RZ_CHECK(uid_col >= 0, pred, ": no StudyInstanceUID column");
  std::array<int, kNumRanzcrLabels> cols{};
  for (size_t k = 0; k < kRanzcrLabels.size(); ++k) {
    cols[k] = p.column(kRanzcrLabels[k]);
    RZ_CHECK(cols[k] >= 0, pred, ": missing the column '", kRanzcrLabels[k], "'");
  }
  const int64_t n = static_cast<int64_t>(p.rows.size());
  std::vector<float> scores(static_cast<size_t>(n * kNumRanzcrLabels)), labels(scores.size());
  std::vector<bool> seen(t.studies.size(), false);
  for (int64_t r = 0; r < n; ++r) {
    const auto& row = p.rows[static_cast<size_t>(r)];
    const std::string& uid = row.fields[static_cast<size_t>(uid_col)];
    const int64_t ti = t.find(uid);
    RZ_CHECK(ti >= 0, pred, ":", row.line, ": StudyInstanceUID '", uid, "' is not in ", truth);
    RZ_CHECK(!seen[static_cast<size_t>(ti)], pred, ":", row.line, ": StudyInstanceUID '", uid,
             "' appears twice");
    seen[static_cast<size_t>(ti)] = true;
    for (size_t k = 0; k < kRanzcrLabels.size(); ++k) {
      const std::string& v = row.fields[static_cast<size_t>(cols[k])];
      float f = 0;
      const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), f);
      RZ_CHECK(ec == std::errc() && ptr == v.data() + v.size() && std::isfinite(f), pred, ":",
               row.line, ": column '", kRanzcrLabels[k], "': '", v, "' is not a finite number");
      scores[static_cast<size_t>(r) * kNumRanzcrLabels + k] = f;
      labels[static_cast<size_t>(r) * kNumRanzcrLabels + k] = t.studies[static_cast<size_t>(ti)].labels[k];
    }
  }
  for (size_t i = 0; i < seen.size(); ++i)
    RZ_CHECK(seen[i], pred, ": no prediction for StudyInstanceUID '", t.studies[i].uid, "' of ",
             truth, " (line ", t.studies[i].csv_line, ")");
  RZ_CHECK(n > 0, pred, ": no predictions (header only)");
  AucReport r = auc_report(scores.data(), labels.data(), n);
  RZ_CHECK(r.defined_labels > 0, "no label of ", truth, " has both classes among its ", n,
           " studies: every AUC is undefined, so there is no score");
  return r;
}

std::string format_auc_table(const AucReport& r) {
  std::string out;
  char line[160];
  for (size_t k = 0; k < kRanzcrLabels.size(); ++k) {
    const std::string name(kRanzcrLabels[k]);
    if (r.per_label[k])
      std::snprintf(line, sizeof line, "  %-28s %.4f\n", name.c_str(), *r.per_label[k]);
    else
      std::snprintf(line, sizeof line, "  %-28s undefined (one class only)\n", name.c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-28s %.4f (%d of 11 labels)\n", "mean AUC", r.mean, r.defined_labels);
  return out + line;
}

}  // namespace rz
