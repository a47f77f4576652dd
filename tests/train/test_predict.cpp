// `predict --run` reads a model exactly as its run validated it: predicting the
// validation fold's images, then scoring, gives the per-label AUCs `eval`
// reports (and the very same probabilities), for two preprocessing settings.
// Also ensembles, TTA, the refusal of unsafe overrides, and old runs.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/csv.h"
#include "data/ranzcr_csv.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"
#include "train/config.h"
#include "train/predict.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using rz::test::contains;
using rz::test::error_message;
using rz::test::TempDir;

namespace {

const rz::TrainHooks quiet{.log = [](const std::string&) {}};

// 60 synthetic studies, one or more trained runs on them.
struct PredictSet {
  TempDir dir{"predict"};
  std::string data_dir;

  PredictSet() {
    rz::data::SynthOptions so;
    so.out_dir = data_dir = (dir.path() / "data").string();
    so.n = 60;
    so.n_test = 0;
    so.size = 64;
    so.seed = 2;
    so.threads = 2;
    so.difficulty = 0.2;
    rz::data::run_synth(so);
  }

  std::string prep(const std::string& name, int64_t size, double clip, int tiles) const {
    rz::data::PrepOptions po;
    po.data_dir = data_dir;
    po.out_dir = (dir.path() / name).string();
    po.image_size = size;
    po.clahe_clip = clip;
    po.clahe_tiles_x = po.clahe_tiles_y = tiles;
    po.threads = 2;
    rz::data::run_prep(po, {}, [](const std::string&) {});
    return po.out_dir;
  }

  // A one-epoch fine-tune run of seresnet_tiny on `cache`; returns its folder.
  std::string train(const std::string& name, const std::string& cache, double eval_crop, uint64_t seed = 0) const {
    const std::string toml =
        "[run]\nname = \"" + name + "\"\nout_dir = \"" + (dir.path() / "runs").string() +
        "\"\ndevice = \"cpu\"\nthreads = 2\nseed = " + std::to_string(seed) +
        "\n[model]\nname = \"seresnet_tiny\"\nimg_size = 32\n"
        "[data]\ndir = \"" + data_dir + "\"\ncache_dir = \"" + cache + "\"\nworkers = 2\n"
        "[aug]\neval_crop = " + std::to_string(eval_crop) +
        "\n[stage]\nkind = \"finetune\"\n[optim]\nname = \"adamw\"\nlr = 0.005\n"
        "[train]\nepochs = 2\nbatch = 8\n";
    return rz::train(rz::parse_config(toml, name + ".toml"), quiet).run_dir;
  }

  // train.csv restricted to `uids` (the truth for score), and a
  // sample_submission listing them in order.
  void write_fold_files(const std::vector<std::string>& uids, const std::string& truth,
                        const std::string& sample) const {
    std::ifstream in(fs::path(data_dir) / "train.csv");
    std::string line, header;
    std::getline(in, header);
    const std::set<std::string> keep(uids.begin(), uids.end());
    std::string t = header + "\n";
    while (std::getline(in, line))
      if (keep.count(line.substr(0, line.find(',')))) t += line + "\n";
    std::ofstream(truth) << t;
    std::string s = "StudyInstanceUID";
    for (const auto& l : rz::kRanzcrLabels) s += "," + std::string(l);
    s += "\n";
    for (const auto& u : uids) {
      s += u;
      for (size_t k = 0; k < rz::kRanzcrLabels.size(); ++k) s += ",0";
      s += "\n";
    }
    std::ofstream(sample) << s;
  }

  rz::PredictOptions predict_options(const std::string& sample, const std::string& out) const {
    rz::PredictOptions o;
    o.images_dir = (fs::path(data_dir) / "train").string();
    o.sample_submission = sample;
    o.out = out;
    o.device = "cpu";
    o.workers = 2;
    o.log = [](const std::string&) {};
    return o;
  }
};

std::vector<float> submission_probs(const std::string& path) {
  const rz::CsvTable t = rz::read_csv(path);
  std::vector<float> p;
  for (const auto& row : t.rows)
    for (size_t k = 0; k < rz::kRanzcrLabels.size(); ++k) p.push_back(std::stof(row.fields[k + 1]));
  return p;
}

}  // namespace

TEST_CASE("predict --run then score equals eval, per label, for two preprocessing settings") {
  const PredictSet set;
  struct Setting {
    const char* name;
    int64_t prep_size;
    double clip;
    int tiles;
    double eval_crop;
  };
  for (const Setting st : {Setting{"a", 48, 2.0, 8, 1.0}, Setting{"b", 40, 4.0, 4, 0.875}}) {
    CAPTURE(st.name);
    const std::string cache = set.prep(std::string("cache_") + st.name, st.prep_size, st.clip, st.tiles);
    const std::string run = set.train(std::string("run_") + st.name, cache, st.eval_crop);
    // The run recorded how its images were prepared.
    const rz::TrainConfig rc = rz::load_config((fs::path(run) / "config.toml").string());
    CHECK(rc.prep.image_size == st.prep_size);
    CHECK(rc.prep.clahe_clip == st.clip);
    CHECK(rc.prep.clahe_tiles_x == st.tiles);

    const rz::EvalResult ev = rz::evaluate(rc, (fs::path(run) / "best.ckpt").string());
    REQUIRE(ev.uids.size() >= 8);
    const std::string truth = (set.dir.path() / (std::string("truth_") + st.name + ".csv")).string();
    const std::string sample = (set.dir.path() / (std::string("sample_") + st.name + ".csv")).string();
    set.write_fold_files(ev.uids, truth, sample);

    rz::PredictOptions o = set.predict_options(sample, (set.dir.path() / (std::string("sub_") + st.name + ".csv")).string());
    o.runs = {run};
    const rz::PredictReport pr = rz::run_predict(o);
    CHECK(pr.images == static_cast<int64_t>(ev.uids.size()));
    CHECK(pr.images_per_second > 0);
    // The very probabilities eval computed ...
    CHECK(submission_probs(o.out) == ev.probs);
    // ... hence the same AUCs, label by label.
    const rz::AucReport sc = rz::score_submission(o.out, truth);
    int defined = 0;
    for (size_t k = 0; k < rz::kRanzcrLabels.size(); ++k) {
      CAPTURE(rz::kRanzcrLabels[k]);
      REQUIRE(sc.per_label[k].has_value() == ev.record.auc[k].has_value());
      if (!sc.per_label[k]) continue;
      ++defined;
      CHECK(std::abs(*sc.per_label[k] - *ev.record.auc[k]) <= 1e-6);
    }
    CHECK(defined >= 3);  // enough labels have both classes in the fold for the check to mean something
    CHECK(std::abs(sc.mean - ev.record.mean_auc) <= 1e-6);

    // The old way (resize straight to the input size) feeds the model other
    // inputs: the probabilities move. The check above can fail.
    rz::PredictOptions naive = set.predict_options(sample, (set.dir.path() / "naive.csv").string());
    naive.weights = (fs::path(run) / "best.ckpt").string();
    naive.model = "seresnet_tiny";
    naive.img_size = 32;
    rz::run_predict(naive);
    CHECK(submission_probs(naive.out) != ev.probs);
  }
}

TEST_CASE("predict: ensembles, TTA and the stated combination") {
  const PredictSet set;
  const std::string cache = set.prep("cache", 40, 2.0, 8);
  const std::string run1 = set.train("r1", cache, 1.0, 1);
  const std::string run2 = set.train("r2", cache, 1.0, 2);
  const rz::TrainConfig rc = rz::load_config((fs::path(run1) / "config.toml").string());
  const rz::EvalResult ev = rz::evaluate(rc, (fs::path(run1) / "best.ckpt").string());
  const std::string sample = (set.dir.path() / "sample.csv").string();
  set.write_fold_files(ev.uids, (set.dir.path() / "truth.csv").string(), sample);
  auto run = [&](std::vector<std::string> runs, bool tta, const std::string& how, const std::string& name) {
    rz::PredictOptions o = set.predict_options(sample, (set.dir.path() / name).string());
    o.runs = std::move(runs);
    o.tta_hflip = tta;
    o.ensemble = how;
    const auto r = rz::run_predict(o);
    CHECK(r.models == static_cast<int64_t>(o.runs.size()));
    CHECK(r.views == (tta ? 2 : 1));
    return submission_probs(o.out);
  };
  const auto p1 = run({run1}, false, "prob", "p1.csv");
  const auto p2 = run({run2}, false, "prob", "p2.csv");
  const auto p12 = run({run1, run2}, false, "prob", "p12.csv");
  const auto l12 = run({run1, run2}, false, "logit", "l12.csv");
  REQUIRE(p1.size() == p12.size());
  CHECK(p1 != p2);
  for (size_t i = 0; i < p1.size(); ++i) {
    CAPTURE(i);
    // Mean of probabilities.
    CHECK(p12[i] == doctest::Approx(0.5 * (p1[i] + p2[i])).epsilon(1e-6));
    // Sigmoid of the mean logit.
    const double l1 = std::log(p1[i] / (1 - p1[i])), l2 = std::log(p2[i] / (1 - p2[i]));
    CHECK(l12[i] == doctest::Approx(1.0 / (1.0 + std::exp(-0.5 * (l1 + l2)))).epsilon(1e-5));
  }
  // TTA: a second view, the flipped image, averaged in.
  const auto t1 = run({run1}, true, "prob", "t1.csv");
  CHECK(t1 != p1);
  // The same run twice is the run.
  const auto p11 = run({run1, run1}, false, "prob", "p11.csv");
  for (size_t i = 0; i < p1.size(); ++i) CHECK(p11[i] == doctest::Approx(p1[i]).epsilon(1e-7));
}

TEST_CASE("predict: a run's inputs cannot be overridden, and bad requests are clear errors") {
  const PredictSet set;
  const std::string cache = set.prep("cache", 40, 2.0, 8);
  const std::string run = set.train("r", cache, 1.0);
  const std::string out = (set.dir.path() / "never.csv").string();
  auto message = [&](auto&& change) {
    rz::PredictOptions o = set.predict_options("", out);
    o.runs = {run};
    change(o);
    return error_message([&] { rz::run_predict(o); });
  };
  const std::string size_msg = message([](rz::PredictOptions& o) { o.img_size = 64; });
  CHECK(contains(size_msg, "the run says model.img_size = 32"));
  CHECK(contains(size_msg, "--img-size cannot override it"));
  CHECK(contains(message([](rz::PredictOptions& o) { o.prep_size = 64; }), "prep.image_size = 40"));
  CHECK(contains(message([](rz::PredictOptions& o) { o.clahe_clip = 3.0; }), "the CLAHE options cannot override it"));
  CHECK(contains(message([](rz::PredictOptions& o) { o.model = "seresnet50"; }), "--model cannot override it"));
  CHECK(contains(message([&](rz::PredictOptions& o) { o.weights = run + "/best.ckpt"; }), "not both"));
  CHECK(contains(message([&](rz::PredictOptions& o) {
                   o.runs = {run, run};
                   o.ckpt = run + "/last.ckpt";
                 }),
                 "with several runs, --ckpt is best or last"));
  CHECK(contains(message([&](rz::PredictOptions& o) { o.ckpt = "nothing"; }), "does not exist"));
  CHECK(contains(message([&](rz::PredictOptions& o) { o.images_dir = (set.dir.path() / "none").string(); }),
                 "does not exist"));
  CHECK_FALSE(fs::exists(out));

  // A run that predates recorded preprocessing: its cache says it.
  const std::string old_run = (set.dir.path() / "old").string();
  fs::create_directories(old_run);
  rz::TrainConfig c = rz::load_config((fs::path(run) / "config.toml").string());
  c.prep.image_size = 0;
  std::ofstream(fs::path(old_run) / "config.toml") << rz::config_to_toml(c);
  fs::copy_file(fs::path(run) / "best.safetensors", fs::path(old_run) / "weights.safetensors");
  std::vector<std::string> notes;
  rz::PredictOptions o = set.predict_options("", (set.dir.path() / "old.csv").string());
  o.runs = {old_run};
  o.ckpt = (fs::path(old_run) / "weights.safetensors").string();
  o.log = [&](const std::string& s) { notes.push_back(s); };
  rz::run_predict(o);
  bool said = false;
  for (const auto& n : notes) said |= contains(n, "predates recorded preprocessing") && contains(n, "40 px");
  CHECK(said);
  // ... and without the cache, a clear error.
  c.data.cache_dir = (set.dir.path() / "gone").string();
  std::ofstream(fs::path(old_run) / "config.toml") << rz::config_to_toml(c);
  CHECK(contains(error_message([&] { rz::run_predict(o); }), "does not record its preprocessing"));
}

TEST_CASE("train: prep.* set in the config must match the cache") {
  const PredictSet set;
  const std::string cache = set.prep("cache", 40, 2.0, 8);
  rz::TrainConfig c = rz::parse_config("[data]\ndir = \"" + set.data_dir + "\"\ncache_dir = \"" + cache +
                                           "\"\n[prep]\nimage_size = 48\n[run]\nout_dir = \"" +
                                           (set.dir.path() / "runs").string() + "\"\n",
                                       "x.toml");
  const std::string msg = error_message([&] { rz::train(c, quiet); });
  CHECK(contains(msg, "prep.* says the images were prepared at 48 px"));
  CHECK(contains(msg, "holds 40 px, CLAHE clip 2 tiles 8x8"));
}
