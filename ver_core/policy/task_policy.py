"""TaskPolicy: frozen VER library + Robot Router + necks + action head, saved as a task checkpoint.

Checkpoint directory (self-contained; what the encoder/policy nodes and ver-eval load):
    config.json        {"format": "ver-task", "version": 2, "task": TaskConfig, "model": VERConfig}
    model.safetensors  library (BVT + experts) + routers (+ new experts) + necks + head weights
    stats.json         NormStats (state mean/std, action min/max)

Observations have V camera views (``config.cameras``). Token tensors are (B, V, N, D); a
(B, N, D) tensor is accepted as one view. Version-1 checkpoints (one camera, keys ``router.*``
and ``neck.*``) load unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ver_core.model import (
    LibraryOutput,
    VERConfig,
    VisionExpertTransformer,
    build_model,
    load_library,
    parameter_report,
)
from ver_core.policy.config import TaskConfig
from ver_core.policy.grasp_point import (
    MAX_CORRECTION,
    OPEN_WIDTH,
    REJECT_M,
    SEARCH_MIN_PROB,
    SEARCH_TOP,
    CameraRig,
    GraspPointHead,
    GraspPointTracker,
    GraspYawNet,
    MeanGraspHead,
    detect,
    grasp_point_loss,
    grasp_yaw,
    head_outputs,
    heading,
    patch_maps,
    sightings,
    top_down,
    world_yaw_vec,
)
from ver_core.policy.heads import _mlp, build_head
from ver_core.policy.neck import build_neck
from ver_core.policy.normalization import ActionNormalization, NormStats
from ver_core.router import ViewRouter

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, STATS_FILE = "config.json", "model.safetensors", "stats.json"
FORMAT = "ver-task"
TCP_OFFSET_SCALE = 0.1  # m: the head sees the hand-to-keypose TCP offset in these units


@functools.cache
def _kinematics():
    """One arm model per process for the head's TCP offsets (ver_core.eval.kinematics)."""
    from ver_core.eval.kinematics import TcpKinematics

    return TcpKinematics()


@dataclass
class RoutedFeatures:
    """tokens (B, V, 1+P, D) after the routed library; expert_index: per MoE layer (B, V, P, K)
    (patches only)."""

    tokens: Tensor
    expert_index: list[Tensor]


def as_views(tokens: Tensor) -> Tensor:
    """(B, N, D) -> (B, 1, N, D); (B, V, N, D) unchanged."""
    if tokens.ndim == 3:
        return tokens.unsqueeze(1)
    if tokens.ndim != 4:
        raise ValueError(f"expected tokens (B, V, N, D) or (B, N, D), got {tuple(tokens.shape)}")
    return tokens


def _upgrade_v1_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A version-1 (one camera) state dict -> the view-aware layout."""
    out = {}
    for key, value in state.items():
        if key.startswith("router.") and not key.startswith("router.routers."):
            key = "router.routers.0." + key[len("router.") :]
        elif key.startswith("neck."):
            key = "necks.0." + key[len("neck.") :]
        out[key] = value
    return out


def build_task_head(config: TaskConfig) -> nn.Module:
    """The action head a TaskConfig describes (conditioned on neck features + proprioception)."""
    diffusion = (
        {
            "train_steps": config.diffusion_train_steps,
            "infer_steps": config.diffusion_infer_steps,
            "prediction": config.diffusion_prediction,
        }
        if config.head == "diffusion"
        else {}
    )
    vision = len(config.joint_names) if config.keypose else config.num_views * config.neck_dim
    if config.keypose and config.head_tcp_offset:
        vision += 3  # the hand's TCP relative to the keypose's (TaskPolicy.tcp_offset_n)
    return build_head(
        config.head,
        vision + config.state_dim,
        config.hidden_dim,
        config.chunk_len,
        config.action_dim,
        **diffusion,
    )


def _build_member(member: nn.Module, config: TaskConfig, mc: VERConfig) -> None:
    """Give ``member`` what one ensemble member learns after the router: a neck per camera, the
    action head, (keypose policies) the keypose estimator, (grasp-point policies) a grasp-point
    head per camera."""
    member.necks = nn.ModuleList(
        build_neck(config.neck, mc.embed_dim, mc.grid_size, config.neck_dim) for _ in config.cameras
    )
    member.head = build_task_head(config)
    if config.keypose:  # vision -> the way to the next gripper event's arm pose
        member.keypose_head = _mlp(
            config.num_views * config.neck_dim, config.hidden_dim, len(config.joint_names)
        )
    if config.grasp_point:  # per view: where the hand will close (ver_core.policy.grasp_point)
        member.grasp_heads = nn.ModuleList(
            GraspPointHead(mc.embed_dim, mc.grid_size) for _ in config.cameras
        )


class PolicyMember(nn.Module):
    """An ensemble member after the first (``TaskConfig.members``): its own necks, head, keypose
    estimator and grasp-point heads over the policy's router. The first member's modules are the
    policy's own attributes, so a one-member checkpoint keeps the keys it always had."""

    def __init__(self, config: TaskConfig, mc: VERConfig) -> None:
        super().__init__()
        _build_member(self, config, mc)


class TaskPolicy(ActionNormalization, nn.Module):
    def __init__(
        self, config: TaskConfig, model: VisionExpertTransformer, stats: NormStats | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.model = model.requires_grad_(False).eval()
        mc = model.config
        self.router = ViewRouter(mc, config.router, config.num_views, config.router_per_camera)
        _build_member(self, config, mc)  # the first member: self.necks, self.head, ...
        if config.grasp_point:
            if config.grasp_yaw_net:  # fitted apart, after the heads (RouterTrainer.fit)
                self.grasp_yaw_nets = nn.ModuleList(
                    GraspYawNet(mc.embed_dim) for _ in config.cameras
                )
        self.ensemble = nn.ModuleList(PolicyMember(config, mc) for _ in range(config.members - 1))
        self.active_members: list[int] | None = None  # use_members(); None: all of them
        self._rig: CameraRig | None = None  # built on first use (needs the calibration)
        self.stats = stats or NormStats.identity(config.state_dim, config.action_dim)
        for name, t in self.stats.tensors().items():
            self.register_buffer(name, t, persistent=False)
        self._check_stats()

    def train(self, mode: bool = True) -> TaskPolicy:
        """The frozen library always stays in eval mode; router, neck and head follow ``mode``."""
        super().train(mode)
        self.model.eval()
        return self

    def _check_stats(self) -> None:
        if self.state_mean.numel() != self.config.state_dim:
            raise ValueError(
                f"stats have state dim {self.state_mean.numel()}, config {self.config.state_dim}"
            )
        if self.action_min.numel() != self.config.action_dim:
            raise ValueError(
                f"stats have action dim {self.action_min.numel()}, config {self.config.action_dim}"
            )

    def set_stats(self, stats: NormStats) -> None:
        self.stats = stats
        for name, t in stats.tensors().items():
            setattr(self, name, t.to(self.state_mean.device))
        self._check_stats()

    # ------------------------------------------------------------------ build / io
    @classmethod
    def build(cls, config: TaskConfig, stats: NormStats | None = None) -> TaskPolicy:
        """An untrained policy over the library at ``config.library`` (or a fresh one, loudly)."""
        if config.library:
            model = load_library(config.library)
            log.info("loaded VER library from %s", config.library)
        else:
            model = build_model(config.model, **config.model_overrides)
            log.warning(
                "WARNING: no --library given: using a FRESHLY INITIALIZED %s library (random experts); "
                "train one with ver-distill for real results",
                config.model,
            )
        if config.image_size is not None:
            model.resize_input(config.image_size)
        return cls(config, model, stats)

    def all_members(self) -> list[nn.Module]:
        """Every ensemble member (the policy itself first), whatever ``use_members`` chose."""
        return [self, *self.ensemble]

    def members(self) -> list[nn.Module]:
        """The members that predict (``use_members``; all of them unless told otherwise)."""
        every = self.all_members()
        if self.active_members is None:
            return every
        return [every[i] for i in self.active_members]

    def use_members(self, indices: list[int] | None) -> TaskPolicy:
        """Predict with these members only (None: all): to compare an ensemble with its
        members on the same scenes. Training always trains every member."""
        if indices is not None:
            indices = [int(i) for i in indices]
            if not indices or any(not 0 <= i < self.config.members for i in indices):
                raise ValueError(
                    f"members must be a non-empty list of indices in [0, {self.config.members}), "
                    f"got {indices}"
                )
        self.active_members = indices
        return self

    @staticmethod
    def _member_modules(member: nn.Module, config: TaskConfig) -> list[nn.Module]:
        modules = [member.necks, member.head]
        if config.keypose:
            modules.append(member.keypose_head)
        if config.grasp_point:
            modules.append(member.grasp_heads)
        return modules

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Routers (+ new experts) + every member's necks and heads; the library stays frozen."""
        modules = [self.router]
        for member in self.all_members():
            modules += self._member_modules(member, self.config)
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def parameter_summary(self) -> dict[str, float]:
        library = sum(p.numel() for p in self.model.parameters())
        rep = parameter_report(self.model)
        routers = self.router.router_parameter_count()
        total = library - sum(
            sum(p.numel() for p in r.parameters()) for r in self.model.routers.values()
        )
        total += self.router.parameter_count()
        return {
            "library": library,
            "library_experts": rep.experts,
            "robot_router": routers,
            "new_experts": self.router.parameter_count() - routers,
            "members": self.config.members,
            "neck": sum(p.numel() for m in self.all_members() for p in m.necks.parameters()),
            "head": sum(
                p.numel()
                for m in self.all_members()
                for module in self._member_modules(m, self.config)[1:]
                for p in module.parameters()
            )
            + (
                sum(p.numel() for p in self.grasp_yaw_nets.parameters())
                if self.config.grasp_yaw_net
                else 0
            ),
            "router_percent_of_model": 100.0 * routers / max(total, 1),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "version": 2,
            "task": self.config.to_dict(),
            "model": self.model.config.to_dict(),
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / (WEIGHTS_FILE + ".tmp")))
        self.stats.save(directory / (STATS_FILE + ".tmp"))
        (directory / (CONFIG_FILE + ".tmp")).write_text(json.dumps(payload, indent=2))
        for name in (WEIGHTS_FILE, STATS_FILE, CONFIG_FILE):  # config last: marks it complete
            (directory / (name + ".tmp")).replace(directory / name)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> TaskPolicy:
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a task checkpoint: {CONFIG_FILE} is missing"
            )
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path} has format {payload.get('format')!r}, expected {FORMAT!r}")
        config = TaskConfig.from_dict(payload["task"])
        model = VisionExpertTransformer(VERConfig.from_dict(payload["model"]))
        policy = cls(config, model, NormStats.load(directory / STATS_FILE))
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}")
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read {weights}: {e}") from e
        if payload.get("version", 1) < 2:
            state = _upgrade_v1_keys(state)
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        return policy.to(map_location).eval()

    # ------------------------------------------------------------------ compute
    def route(self, bvt_tokens: Tensor, step: int | None = None) -> LibraryOutput:
        """BVT tokens (B, V, 1+P, D) -> routed library output, tokens (B, V, 1+P, D) (K annealed by
        ``step`` when training)."""
        return self.router(self.model, as_views(bvt_tokens), step)

    def _views(self, tokens: Tensor, member: nn.Module | None = None) -> Tensor:
        """Routed tokens (B, V, 1+P, D) -> a member's (default the first's) necks' features,
        concatenated (B, V * F)."""
        member = self if member is None else member
        tokens = as_views(tokens)
        if tokens.shape[1] != self.config.num_views:
            raise ValueError(
                f"policy has {self.config.num_views} camera views {self.config.cameras}, "
                f"got tokens of {tokens.shape[1]}"
            )
        return torch.cat([neck(tokens[:, v]) for v, neck in enumerate(member.necks)], dim=-1)

    def _state_n(self, state: Tensor, dtype) -> Tensor:
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise ValueError(
                f"state must be (B, {self.config.state_dim}), got {tuple(state.shape)}"
            )
        return (state.to(dtype) - self.state_mean) / self.state_std

    def keypose_n(self, keypose: Tensor) -> Tensor:
        """Joint-space keyposes (B, 7) rad -> normalized like the state's joints."""
        j = len(self.config.joint_names)
        return (keypose - self.state_mean[:j]) / self.state_std[:j]

    def _keypose_offset_n(self, feats: Tensor, member: nn.Module | None = None) -> Tensor:
        """The estimator: the necks' features -> (keypose - measured joints), in units of the
        joints' std (B, 7). Relative, because a camera on the hand sees where the object is
        relative to the hand, wherever the arm is; from the images alone, because with the
        state as input it learns the demonstrations' shortcut (late in a demo the arm is always
        near the keypose: "offset ~ 0") and stops correcting an arm that is off."""
        return (self if member is None else member).keypose_head(feats)

    def estimate_keypose(self, tokens: Tensor, state: Tensor) -> Tensor:
        """Routed tokens (B, V, 1+P, D) + raw state (B, S) -> estimated keypose (B, 7) in rad
        (an ensemble: the mean of its members' estimates)."""
        self._state_n(state, self.state_mean.dtype)  # the state's shape check, its clear error
        offsets = [self._keypose_offset_n(self._views(tokens, m), m) for m in self.members()]
        offset = torch.stack(offsets).mean(0)
        j = len(self.config.joint_names)
        return state[:, :j].to(offset.dtype) + offset * self.state_std[:j]

    def tcp_offset_n(self, keypose: Tensor, state: Tensor) -> Tensor:
        """(B, 3): the TCP of the measured joints less the keypose's TCP (world x, y, z), in
        units of TCP_OFFSET_SCALE m. Forward kinematics of the arm model, not differentiated
        (the keypose it is given is a label, an estimate or a corrected detection)."""
        j = len(self.config.joint_names)
        kin = _kinematics()
        hand = state[:, :j].detach().double().cpu().numpy()
        goal = keypose.detach().double().cpu().numpy()
        out = np.stack([kin.tcp(h) - kin.tcp(g) for h, g in zip(hand, goal, strict=True)])
        return torch.from_numpy(out / TCP_OFFSET_SCALE).to(state.device, self.state_mean.dtype)

    def _keypose_input(self, keypose: Tensor, state: Tensor, state_n: Tensor) -> Tensor:
        """A keypose policy's head input: keypose (B, 7) rad -> [keypose_n, (tcp offset,)
        state_n]."""
        parts = [self.keypose_n(keypose.to(state_n.dtype))]
        if self.config.keypose and self.config.head_tcp_offset:
            parts.append(self.tcp_offset_n(keypose, state).to(state_n.dtype))
        return torch.cat([*parts, state_n], dim=-1)

    def condition(
        self,
        tokens: Tensor,
        state: Tensor,
        keypose: Tensor | None = None,
        member: nn.Module | None = None,
    ) -> Tensor:
        """Routed tokens (B, V, 1+P, D) + raw state (B, S) -> a member's (default the first's)
        head input: its necks' features (B, V * F), or for a keypose policy its estimated keypose
        (B, 7) (or ``keypose`` (B, 7) rad, when given: the same for every member) (and the hand's
        TCP relative to it, ``head_tcp_offset``), then the state."""
        if self.config.keypose and keypose is not None:  # the image features are not needed
            state_n = self._state_n(state, self.state_mean.dtype)
            return self._keypose_input(keypose, state, state_n)
        feats = self._views(tokens, member)
        state_n = self._state_n(state, feats.dtype)
        if not self.config.keypose:
            return torch.cat([feats, state_n], dim=-1)
        j = len(self.config.joint_names)
        offset = self._keypose_offset_n(feats, member)
        estimate = state[:, :j].to(feats.dtype) + offset * self.state_std[:j]
        return self._keypose_input(estimate, state, state_n)

    @property
    def rig(self) -> CameraRig:
        """The cameras' geometry (calibration of the checkpoint) for grasp-point detection."""
        if self._rig is None:
            self._rig = CameraRig(self.config.camera_calibration, self.config.cameras)
        return self._rig

    @torch.no_grad()
    def grasp_point(
        self, tokens: Tensor, state: Tensor, tracker: GraspPointTracker | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Routed tokens (B, V, 1+P, D) + raw state (B, S) -> the detected grasp point (B, 3) in
        the world (m; NaN where no view sees it), the grasp's yaw (B,) (rad, of its equivalent
        yaws the one nearest the hand's current yaw) and the view it came from (B,) (-1: none).
        A camera on the arm wins where it sees the point (it sees it closest), else the fixed
        camera most sure to see it. With a ``tracker`` (one robot: B = 1) this frame's
        candidates update the tracker's estimate across frames, and that is returned."""
        if not self.config.grasp_point or self.config.grasp_height is None:
            raise ValueError("this policy has no trained grasp-point detector")
        tokens = as_views(tokens)
        j = len(self.config.joint_names)
        q = state[:, :j].double().cpu().numpy()
        if tracker is not None:  # the state's last entry: the hand's measured opening
            return self._tracked_grasp_point(tokens, q, tracker, state[:, j].double().cpu().numpy())
        uv, p_seen, yaw_vec = detect(self.detector_heads, tokens, self.yaw_nets)
        on_arm = np.array([body != 0 for body, *_ in self.rig.views])
        points = np.full((len(q), 3), np.nan)
        yaws = np.full(len(q), np.nan)
        view = np.full(len(q), -1)
        for b in range(len(q)):
            seen = p_seen[b] > 0.5
            if not seen.any():
                continue
            pick = np.flatnonzero(seen & on_arm)
            v = int(pick[0]) if len(pick) else int(np.argmax(np.where(seen, p_seen[b], -1)))
            points[b] = self.rig.ray_to_plane(v, uv[b, v], q[b], self.config.grasp_height)
            if np.all(np.isfinite(points[b])):
                view[b] = v
                order = self.config.grasp_yaw_order
                heading = self.rig.headings(q[b])[v]
                vec = world_yaw_vec(yaw_vec[b, v], heading, order, self.config.grasp_yaw_frame)
                yaws[b] = grasp_yaw(vec, order, self.rig.tcp_yaw(q[b]))
        return points, yaws, view

    @property
    def detector_heads(self) -> list:
        """Per view the grasp-point head that detects: a member's own, or (an ensemble) its
        members' heads as one (``MeanGraspHead``: their patch probabilities averaged)."""
        members = self.members()
        if len(members) == 1:
            return list(members[0].grasp_heads)
        return [
            MeanGraspHead([m.grasp_heads[v] for m in members]) for v in range(self.config.num_views)
        ]

    @property
    def yaw_nets(self) -> nn.ModuleList | None:
        """The views' ``GraspYawNet``s (None: the grasp heads read the yaw)."""
        return self.grasp_yaw_nets if self.config.grasp_yaw_net else None

    @torch.no_grad()
    def grasp_outputs(self, tokens: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Routed tokens (V, 1+P, D) of one observation -> each view's (logits, offsets, yaws)
        (``head_outputs``, the yaws from the yaw nets where the policy has them)."""
        return head_outputs(self.detector_heads, tokens, self.yaw_nets)

    def _tracked_grasp_point(
        self, tokens: Tensor, q: np.ndarray, tracker: GraspPointTracker, width: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(q) != 1:
            raise ValueError(f"a grasp-point tracker follows one robot: batch 1, got {len(q)}")
        on_arm = [body != 0 for body, *_ in self.rig.views]
        cameras = self.rig.poses(q[0])
        headings = [heading(rot) for _, rot in cameras]
        order, frame = self.config.grasp_yaw_order, self.config.grasp_yaw_frame
        outputs = self.grasp_outputs(tokens[0])  # one pass: sightings and maps
        found = []
        search = {"top": SEARCH_TOP, "min_prob": SEARCH_MIN_PROB} if tracker.searching else {}
        for s in sightings(self.detector_heads, tokens[0], on_arm, outputs=outputs, **search):
            point = self.rig.ray_to_plane(s.view, s.uv, q[0], self.config.grasp_height)
            if np.all(np.isfinite(point)):
                rng = float(np.linalg.norm(point - cameras[s.view][0]))
                vec = world_yaw_vec(s.yaw_vec, headings[s.view], order, frame)
                found.append(dataclasses.replace(s, point=point, range_m=rng, yaw_vec=vec))
        maps = []
        if found:  # the tracker weighs its candidates by every view's whole probability map
            maps = patch_maps(outputs, self.rig, cameras)
        hand = None  # the hand's TCP: only the tracker's reject / commit options read it
        if tracker.reject_m is not None or tracker.commit_dz is not None:
            hand = self.rig.kin.tcp(q[0])
        estimate = tracker.update(found, maps, float(width[0]), hand)
        if estimate is None:
            return np.full((1, 3), np.nan), np.full(1, np.nan), np.full(1, -1)
        point, yaw_vec, view = estimate
        yaw = grasp_yaw(yaw_vec, self.config.grasp_yaw_order, self.rig.tcp_yaw(q[0]))
        return point[None], np.array([yaw]), np.array([view])

    def grasp_tracker(self) -> GraspPointTracker | None:
        """A new ``GraspPointTracker`` for ``predict_chunk`` (None: the policy detects none). It
        rules out the place of an empty close (``REJECT_M``): the retry reopens the hand and
        goes to the next candidate."""
        return GraspPointTracker(reject_m=REJECT_M) if self.config.grasp_point else None

    @torch.no_grad()
    def corrected_keypose(
        self, tokens: Tensor, state: Tensor, tracker: GraspPointTracker | None = None
    ) -> Tensor:
        """The regressed keypose (B, 7) rad, moved (damped least squares) so that its TCP sits
        on the detected grasp point (tracked across frames by ``tracker``, when given), pointing
        down at the detected yaw, where a point is detected (at most MAX_CORRECTION m: a wild
        detection cannot send the arm far from where the regression points)."""
        keypose = self.estimate_keypose(tokens, state)
        points, yaws, view = self.grasp_point(tokens, state, tracker)
        out = keypose.double().cpu().numpy()
        for b in range(len(out)):
            if view[b] >= 0:
                rotation = top_down(yaws[b])
                out[b] = self.rig.reach(out[b], points[b], 60, MAX_CORRECTION, rotation)
        return torch.from_numpy(out).to(keypose)

    def loss(
        self,
        bvt_tokens: Tensor,
        state: Tensor,
        actions: Tensor,
        step: int | None = None,
        keypose: Tensor | None = None,
        grasp: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Training loss: BVT tokens (B, V, N, D), raw state (B, S), raw action chunks (B, H, A)
        (+ demonstrated keyposes (B, 7) for a keypose policy, + grasp-point labels)."""
        tokens = self.route(bvt_tokens, step).tokens
        return self.loss_from_tokens(tokens, state, actions, keypose, grasp)

    def loss_from_tokens(
        self,
        tokens: Tensor,
        state: Tensor,
        actions: Tensor,
        keypose: Tensor | None = None,
        grasp: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Necks + head loss from routed tokens (B, V, 1+P, D) (the router fixed or bypassed).

        A keypose policy's head acts on the demonstrated keypose plus noise (``keypose_noise``
        rad), and its estimator learns the keypose (L1, ``keypose_weight``). With grasp-point
        detection, ``grasp`` = (patch class (B, V), in-patch offset (B, V, 2), yaw (B, V, 2)) labels
        (ver_core.policy.grasp_point.grasp_point_labels), weighted ``grasp_point_weight``.

        An ensemble: the mean of every member's loss (each draws its own keypose noise)."""
        if self.config.grasp_point and grasp is None:
            raise ValueError("a grasp-point policy trains with grasp-point labels")
        if self.config.keypose and keypose is None:
            raise ValueError("a keypose policy trains with keypose labels")
        members = self.all_members()
        total = tokens.new_zeros(())
        for member in members:
            if self.config.grasp_point:
                total = total + self.config.grasp_point_weight * grasp_point_loss(
                    member.grasp_heads,
                    as_views(tokens).float(),
                    *grasp,
                    yaw_radius=self.config.grasp_yaw_radius,
                )
            total = total + self._action_loss(tokens, state, actions, keypose, member)
        return total / len(members)

    def _action_loss(
        self,
        tokens: Tensor,
        state: Tensor,
        actions: Tensor,
        keypose: Tensor | None,
        member: nn.Module,
    ) -> Tensor:
        if not self.config.keypose:
            target = self.normalize_actions(actions, state)
            return member.head.loss(self.condition(tokens, state, member=member), target)
        feats = self._views(tokens, member)
        state_n = self._state_n(state, feats.dtype)
        j = len(self.config.joint_names)
        label = self.keypose_n(keypose.to(feats.dtype))  # (B, 7)
        estimate = state_n[:, :j] + self._keypose_offset_n(feats, member)
        return self.head_loss(state, actions, keypose, member) + self.config.keypose_weight * (
            (estimate - label).abs().mean()
        )

    def head_loss(
        self, state: Tensor, actions: Tensor, keypose: Tensor, member: nn.Module | None = None
    ) -> Tensor:
        """A keypose policy's action-head loss alone (a member's; default the first's): the head
        acts on the demonstrated keypose (B, 7) plus noise (``keypose_noise`` rad) and the raw
        state (B, S); its targets are the raw action chunks (B, H, A) relative to that keypose,
        as when deployed on an estimate. No image enters: RouterTrainer's action-head phase
        trains on it alone, cheaply."""
        if not self.config.keypose:
            raise ValueError("head_loss is a keypose policy's: its head sees no image features")
        member = self if member is None else member
        state_n = self._state_n(state, self.state_mean.dtype)
        noisy = keypose + torch.randn_like(keypose) * self.config.keypose_noise
        target = self.normalize_actions(actions, state, noisy)
        return member.head.loss(self._keypose_input(noisy, state, state_n), target)

    @torch.no_grad()
    def encode(self, images: Tensor) -> RoutedFeatures:
        """Preprocessed images (B, V, 3, S, S) (or (B, 3, S, S): one view) -> RoutedFeatures.

        All views of all observations run through the BVT as one batch."""
        if images.ndim == 4:
            images = images.unsqueeze(1)
        b, v = images.shape[:2]
        bvt = self.model.forward_bvt(images.flatten(0, 1)).unflatten(0, (b, v))  # (B, V, N, D)
        out = self.route(bvt)
        return RoutedFeatures(
            tokens=out.tokens, expert_index=[i.index[:, :, 1:] for i in out.routing]
        )

    @torch.no_grad()
    def predict_chunk(
        self,
        tokens: Tensor,
        state: Tensor,
        generator: torch.Generator | None = None,
        tracker: GraspPointTracker | None = None,
        image_state: Tensor | None = None,
    ) -> Tensor:
        """Routed tokens (B, V, 1+P, D) + raw state (B, S) -> raw action chunk (B, H, 8).
        ``tracker`` (``grasp_tracker()``): a grasp-point policy's estimate kept across the
        frames of one episode (the deployed controller passes one; without it each frame's
        detection stands alone). ``image_state`` (B, S): the joint state when the images were
        taken (default ``state``): the keypose is estimated relative to it, and a camera on
        the arm casts its rays from there, as in training, where both come from one instant;
        the head acts on ``state``, the newest.

        Normalized predictions are clipped to [-1, 1]: never beyond the demonstrated range of
        targets (with ``action_mode`` delta: never a bigger offset from the measured joints).

        An ensemble predicts the mean of its members' normalized chunks (a keypose policy's
        members all act on the one corrected keypose; ``corrected_keypose``).
        """
        keypose = None
        seen_from = state if image_state is None else image_state.to(state)
        if self.config.grasp_point:
            keypose = self.corrected_keypose(tokens, seen_from, tracker)
        elif self.config.keypose:
            keypose = self.estimate_keypose(tokens, seen_from)
        shared = self.config.keypose  # then every member's head input is the same
        cond = self.condition(tokens, state, keypose) if shared else None
        chunks = [
            m.head.sample(
                cond if shared else self.condition(tokens, state, keypose, m), generator=generator
            )
            for m in self.members()
        ]
        normalized = torch.stack(chunks).mean(0).clamp(-1, 1)
        actions = self.unnormalize_actions(normalized, state, keypose)
        if tracker is not None and tracker.reopening:
            # an empty close ruled out its place: the hand opens before it tries elsewhere
            actions[..., len(self.config.joint_names)] = OPEN_WIDTH
        return actions
