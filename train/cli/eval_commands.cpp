// `ranzcr eval`, `ranzcr predict`, `ranzcr score`.
#include <cstdio>
#include <filesystem>

#include "data/ranzcr_csv.h"
#include "train/cli/commands.h"
#include "train/config.h"
#include "train/predict.h"
#include "train/trainer.h"

namespace rz::cli {

void add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Per-label AUC of a run's checkpoint on its validation fold");
  auto run = std::make_shared<std::string>();
  auto which = std::make_shared<std::string>("best");
  auto weights = std::make_shared<std::string>();
  auto fold = std::make_shared<int64_t>(-1);
  auto sets = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--run", *run, "run folder (its config.toml says model, data and fold)")->required();
  cmd->add_option("--ckpt", *which, "best or last, or a path to any checkpoint / weights file");
  cmd->add_option("--fold", *fold, "evaluate on this fold instead of the run's");
  cmd->add_option("--set", *sets, "override a config key (e.g. data.cache_dir=...)");
  auto device = std::make_shared<std::string>();
  cmd->add_option("--device", *device, "cpu, cuda, cuda:N or auto (default: the run's run.device)");
  auto out = std::make_shared<std::string>();
  cmd->add_option("--out", *out, "also write the fold's predictions (out-of-fold, submission format)");
  cmd->callback([=] {
    namespace fs = std::filesystem;
    TrainConfig cfg = load_config((fs::path(*run) / "config.toml").string());
    if (!device->empty()) cfg.run.device = *device;
    for (const auto& s : *sets) apply_override(cfg, s);
    std::string path = *which;
    if (path == "best" || path == "last") path = (fs::path(*run) / (path + ".ckpt")).string();
    const EvalResult r = evaluate(cfg, path, *fold);
    AucReport rep;
    rep.per_label = r.record.auc;
    rep.mean = r.record.mean_auc;
    rep.defined_labels = 0;
    for (const auto& a : rep.per_label) rep.defined_labels += a.has_value();
    if (!out->empty()) write_ranzcr_submission(*out, r.uids, r.probs);
    std::printf("%s on fold %lld (%lld studies), loss %.4f:\n%s", path.c_str(),
                static_cast<long long>(*fold >= 0 ? *fold : cfg.data.fold),
                static_cast<long long>(r.studies), r.record.val_loss, format_auc_table(rep).c_str());
  });
}

void add_predict(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "predict", "Write a sample_submission-format CSV for a folder of images, reading each run's "
                 "model and preprocessing from its checkpoint");
  auto o = std::make_shared<PredictOptions>();
  cmd->add_option("--run", o->runs, "run folder; repeat for an ensemble (folds, seeds, models)");
  cmd->add_option("--ckpt", o->ckpt, "best or last (every run), or a checkpoint file (one run)");
  cmd->add_option("--weights", o->weights,
                  "instead of --run: a plain weights file (timm safetensors or a checkpoint), "
                  "described by the options below");
  auto model = std::make_shared<std::string>();
  auto img_size = std::make_shared<int64_t>(0), in_chans = std::make_shared<int64_t>(0),
       prep_size = std::make_shared<int64_t>(0), tiles = std::make_shared<int64_t>(0);
  auto clip = std::make_shared<double>(0), crop = std::make_shared<double>(0);
  auto no_clahe = std::make_shared<bool>(false);
  auto* o_model = cmd->add_option("--model", *model, "with --weights: model name (default seresnet152d)");
  auto* o_img = cmd->add_option("--img-size", *img_size, "with --weights: input size (default 512)")
                    ->check(CLI::Range(32, 4096));
  auto* o_chans = cmd->add_option("--in-chans", *in_chans, "with --weights: input channels (default 3)")
                      ->check(CLI::Range(1, 3));
  auto* o_prep = cmd->add_option("--prep-size", *prep_size,
                                 "with --weights: size the image is first area-resized to, as prep "
                                 "does (default: the input size)")
                     ->check(CLI::Range(32, 4096));
  auto* o_clip = cmd->add_option("--clahe-clip", *clip, "with --weights: CLAHE clip limit (default 2)");
  auto* o_tiles = cmd->add_option("--clahe-tiles", *tiles, "with --weights: CLAHE tiles per side (default 8)")
                      ->check(CLI::Range(1, 256));
  auto* o_noclahe = cmd->add_flag("--no-clahe", *no_clahe, "with --weights: no CLAHE");
  auto* o_crop = cmd->add_option("--eval-crop", *crop, "with --weights: central crop fraction (default 1)")
                     ->check(CLI::Range(0.01, 1.0));
  cmd->add_option("--images", o->images_dir, "folder of <uid>.jpg images")->required();
  cmd->add_option("--sample-submission", o->sample_submission, "UIDs and their order (optional)");
  cmd->add_option("--out", o->out, "submission CSV to write")->required();
  cmd->add_flag("--tta-hflip", o->tta_hflip, "also read every image flipped horizontally");
  cmd->add_option("--ensemble", o->ensemble,
                  "prob: mean of the probabilities over models and views (default); logit: sigmoid of "
                  "the mean logit")
      ->check(CLI::IsMember({"prob", "logit"}));
  cmd->add_option("--batch", o->batch, "images per forward (default: the run's train.batch)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--workers", o->workers, "decode threads (default: every core)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", o->device, "cpu, cuda, cuda:N or auto (default)");
  cmd->add_option("--precision", o->precision, "fp32 or bf16 (CUDA; default: the run's on CUDA)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  add_image_budget_option(cmd);
  cmd->callback([=] {
    if (*o_model) o->model = *model;
    if (*o_img) o->img_size = *img_size;
    if (*o_chans) o->in_chans = *in_chans;
    if (*o_prep) o->prep_size = *prep_size;
    if (*o_clip) o->clahe_clip = *clip;
    if (*o_tiles) o->clahe_tiles = *tiles;
    if (*o_noclahe) o->clahe = false;
    if (*o_crop) o->eval_crop = *crop;
    o->progress = ProgressLine::auto_mode();
    const auto r = run_predict(*o);
    std::printf("predict: %lld images, %lld model(s) x %lld view(s) in %.1f s (%.1f images/s) -> %s\n",
                static_cast<long long>(r.images), static_cast<long long>(r.models),
                static_cast<long long>(r.views), r.seconds, r.images_per_second, o->out.c_str());
  });
}

void add_score(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Per-label and mean AUC of a predictions CSV");
  auto pred = std::make_shared<std::string>();
  auto truth = std::make_shared<std::string>();
  cmd->add_option("--pred", *pred, "predictions (sample_submission format)")->required();
  cmd->add_option("--truth", *truth, "labels (train.csv format)")->required();
  cmd->callback([=] {
    const AucReport r = score_submission(*pred, *truth);
    for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("%s", format_auc_table(r).c_str());
  });
}

}  // namespace rz::cli
