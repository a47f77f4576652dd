#include "train/predict.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <unordered_map>

#include "data/clahe.h"
#include "data/csv.h"
#include "data/image.h"
#include "data/paths.h"
#include "data/ranzcr_csv.h"
#include "data/resize.h"
#include "engine/autograd.h"
#include "engine/parallel.h"
#include "engine/safetensors.h"
#include "models/seresnet.h"
#include "models/timm_weights.h"
#include "train/checkpoint.h"
#include "train/compute.h"

namespace fs = std::filesystem;

namespace rz {

namespace {
std::string find_image(const fs::path& dir, const std::string& uid) {
  for (const char* ext : {".jpg", ".jpeg", ".png"}) {
    const fs::path p = data::path_in_folder(dir.string(), uid, ext, "image");
    if (fs::exists(p)) return p.string();
  }
  RZ_THROW("no image for '", uid, "' in ", dir.string(), " (looked for .jpg, .jpeg, .png)");
}
}  // namespace

PredictReport run_predict(const PredictOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  RZ_CHECK(!opt.weights.empty() && !opt.out.empty() && !opt.images_dir.empty(),
           "predict needs weights, an images folder and an output path");
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

  ResNetConfig cfg = resnet_config(opt.model);
  cfg.num_classes = kNumRanzcrLabels;
  cfg.in_chans = opt.in_chans;
  const Compute compute = resolve_compute(opt.device, opt.precision);
  auto model = create_resnet(cfg, 0);
  load_timm_state_dict(*model, read_model_weights(opt.weights));
  model->to(compute.device);
  model->eval();
  NoGradGuard no_grad;

  const int64_t S = opt.img_size, C = opt.in_chans, n = static_cast<int64_t>(uids.size());
  std::vector<float> probs(static_cast<size_t>(n * kNumRanzcrLabels));
  for (int64_t b0 = 0; b0 < n; b0 += opt.batch) {
    const int64_t bn = std::min(opt.batch, n - b0);
    Tensor x = Tensor::empty({bn, S, S, C});
    float* px = x.data<float>();
    FirstError decode_error;  // an exception must not leave the parallel region
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < bn; ++i) decode_error.run(i, [&] {
      data::Image img = data::decode_image(find_image(opt.images_dir, uids[static_cast<size_t>(b0 + i)]), 1);
      if (opt.clahe) img = data::clahe(img, 2.0, 8, 8);
      img = data::resize_area(img, S, S);
      float* out = px + i * S * S * C;
      for (int64_t p = 0; p < S * S; ++p)
        for (int64_t c = 0; c < C; ++c)
          out[p * C + c] = (static_cast<float>(img.pixels[static_cast<size_t>(p)]) / 255.0f -
                            data::kImageNetMean[static_cast<size_t>(c)]) /
                           data::kImageNetStd[static_cast<size_t>(c)];
    });
    decode_error.rethrow();
    std::vector<float> avg = host_floats(model->forward(to_compute(x, compute)));
    if (opt.tta_hflip) {
      Tensor flipped = Tensor::empty_like(x);
      const float* src = x.data<float>();
      float* dst = flipped.data<float>();
      for (int64_t i = 0; i < bn; ++i)
        for (int64_t y = 0; y < S; ++y)
          for (int64_t xx = 0; xx < S; ++xx)
            for (int64_t c = 0; c < C; ++c)
              dst[((i * S + y) * S + xx) * C + c] = src[((i * S + y) * S + (S - 1 - xx)) * C + c];
      const auto lf = host_floats(model->forward(to_compute(flipped, compute)));
      for (size_t k = 0; k < avg.size(); ++k) avg[k] = 0.5f * (avg[k] + lf[k]);  // mean logit
    }
    for (size_t k = 0; k < avg.size(); ++k) {
      // A NaN logit comes from the weights (or a broken input), never from the
      // arithmetic here: say which, before a submission full of NaN is written.
      if (!std::isfinite(avg[k])) {
        const size_t image = static_cast<size_t>(b0) + k / kNumRanzcrLabels;
        RZ_THROW("the model's output for image '", uids[image], "' (label '",
                 kRanzcrLabels[k % kNumRanzcrLabels], "') is ", avg[k], ": the weights in ",
                 opt.weights, " or this image produce non-finite logits; nothing was written to ",
                 opt.out);
      }
      probs[static_cast<size_t>(b0 * kNumRanzcrLabels) + k] = 1.0f / (1.0f + std::exp(-avg[k]));
    }
  }
  write_ranzcr_submission(opt.out, uids, probs);
  return {n, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
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
