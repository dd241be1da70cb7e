"""Tissue classes of the head phantom: label index, name, susceptibility, R2* at 3 T and proton density.

Susceptibility (ppm) is relative to CSF/water (≈ −9.05 ppm absolute), the reference the QSM literature uses.
Values, all literature-typical for healthy adults at 3 T:

* Deep grey nuclei, GM, WM: Deistung et al., NeuroImage 65 (2013) 299–314 (QSM at 7 T, regional means) and the
  QSM Challenge 2.0 head model (Marques et al., Magn Reson Med 86 (2021) 526–542), which uses the same ranges
  (caudate ≈ 0.07, putamen ≈ 0.06, globus pallidus ≈ 0.16, SN ≈ 0.14, RN ≈ 0.12, STN ≈ 0.11, dentate ≈ 0.12,
  thalamus ≈ 0.02, GM ≈ +0.02, WM ≈ −0.03 ppm).
* Air: +0.36 ppm absolute (Schenck, Med Phys 23 (1996) 815–850) → +9.41 ppm relative to water.
* Cortical bone: ≈ −2 ppm relative to water (Hopkins & Wehrli, Magn Reson Med 37 (1997) 494–500; Buch et al.,
  Magn Reson Med 73 (2015) 2185–2194).
* Venous blood: χ = Hct·(1 − Y)·Δχ_do with Δχ_do = 3.39 ppm (SI; Spees et al., Magn Reson Med 45 (2001)
  533–542), Hct 0.4 and Y 0.7 → ≈ 0.4 ppm.
* Calcification: strongly diamagnetic, −0.5 ppm in a small focus (Chen et al., Radiology 270 (2014) 496–505
  report −0.2 to −1 ppm); acute/subacute haemorrhage ≈ +1 ppm (Chang et al., Magn Reson Med 2016 range).

R2* at 3 T (Hz): GM ≈ 15, WM ≈ 20, CSF ≈ 2, iron-rich nuclei 30–45, veins ≈ 50, haemorrhage ≈ 100 (Yao et al.,
NeuroImage 44 (2009) 1259–1266; Peran et al., Brain 130 (2007) 1767–1781). R2* scales about linearly with B0
(Yao 2009), which :func:`QSMLogic.phantom.simulate_acquisition` applies. Proton density is relative to CSF (= 1).

Susceptibility sources (χ-separation ground truth; Shin et al., NeuroImage 240 (2021) 118371). Each tissue's net χ
is the sum of a paramagnetic part χ⁺ ≥ 0 (iron) and a diamagnetic part χ⁻ ≤ 0 (myelin, calcium); like the
source-separation stage (:mod:`QSMLogic.separation`), the phantom gives χ⁻ as its magnitude |χ⁻| = −χ⁻ ≥ 0. The
irreversible rate R2 (Hz at 3 T) is declared per tissue (phantom T2: GM 95 ms, WM 74 ms, iron-rich nuclei
57–67 ms; spin-echo T2 of parenchyma at 3 T is about 70–110 ms, e.g. Wansapura et al., J Magn Reson Imaging 9 (1999)
531–538, shorter in iron-rich nuclei), and the sources follow from the two χ-separation equations with the
relaxometric constant Dr (``QSMLogic.separation``, 137 Hz/ppm):

    χ⁺ + χ⁻ = χ,    R2' = R2* − R2 = Dr·(χ⁺ − χ⁻)   →   χ± = (χ ± R2'/Dr)/2.

The R2 values are chosen, within their literature range, so that both signs come out right (R2 ≤ R2* − Dr·|χ|);
the calcification is purely diamagnetic (R2 = R2* − Dr·0.5 = 11.5 Hz, so χ⁺ = 0). Veins and the haemorrhage are
resolved, macroscopic sources outside the static-dephasing model (their R2* is below Dr·χ): they are purely
paramagnetic (χ⁺ = χ, χ⁻ = 0) with the R2 of blood (venous blood T2 ≈ 60 ms at 3 T, Lu et al., Magn Reson Med 67
(2012) 42–49; haematoma ≈ 40 ms), so the χ-separation data there do not fit the model, as in vivo. CSF and the
tissues outside the brain carry no sub-voxel sources (R2 = R2*, χ split by its sign). Like R2*, R2 scales linearly
with B0 in the simulation (a phantom convention that keeps R2' = Dr·(χ⁺ − χ⁻) with Dr ∝ B0 at every field).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..separation import DR_3T_HZ_PER_PPM

#: Field strength at which the R2* (and R2) values below hold.
R2STAR_REFERENCE_B0_TESLA = 3.0


@dataclass(frozen=True)
class Tissue:
    """One tissue class of the phantom (χ in ppm relative to water, R2* in Hz at 3 T, PD relative to CSF)."""

    label: int
    name: str
    chi_ppm: float
    r2star_hz: float
    proton_density: float
    in_brain: bool
    #: Irreversible transverse relaxation rate (Hz at 3 T); None: R2 = R2* (no sub-voxel susceptibility sources).
    r2_hz: Optional[float] = None
    #: Sources below the voxel size, in the static-dephasing regime (χ± from R2'); False: χ split by its sign.
    sub_voxel_sources: bool = True

    @property
    def r2_or_r2star_hz(self) -> float:
        """R2 (Hz at 3 T): the declared value, or R2* where the tissue has no sub-voxel sources."""
        return self.r2star_hz if self.r2_hz is None else self.r2_hz

    @property
    def chi_para_ppm(self) -> float:
        """Paramagnetic susceptibility χ⁺ ≥ 0 (ppm)."""
        if self.r2_hz is None or not self.sub_voxel_sources:
            return max(self.chi_ppm, 0.0)
        return 0.5 * (self.chi_ppm + (self.r2star_hz - self.r2_hz) / DR_3T_HZ_PER_PPM)

    @property
    def chi_dia_ppm(self) -> float:
        """Diamagnetic susceptibility as a magnitude |χ⁻| ≥ 0 (ppm): χ = χ⁺ − |χ⁻|."""
        return self.chi_para_ppm - self.chi_ppm


TISSUES: Tuple[Tissue, ...] = (
    Tissue(0, "background/air", 9.41, 0.0, 0.0, False),
    Tissue(1, "scalp", 0.0, 30.0, 0.75, False),
    Tissue(2, "skull", -2.0, 300.0, 0.08, False),
    Tissue(3, "sinus air", 9.41, 0.0, 0.0, False),
    Tissue(4, "CSF", 0.0, 2.0, 1.0, True),
    Tissue(5, "ventricles", 0.0, 2.0, 1.0, True),
    Tissue(6, "GM", 0.02, 15.0, 0.82, True, r2_hz=10.5),
    Tissue(7, "WM", -0.03, 20.0, 0.69, True, r2_hz=13.5),
    Tissue(8, "caudate", 0.07, 25.0, 0.8, True, r2_hz=13.0),
    Tissue(9, "putamen", 0.06, 28.0, 0.8, True, r2_hz=15.0),
    Tissue(10, "globus pallidus externa (GPe)", 0.17, 42.0, 0.75, True, r2_hz=17.5),
    Tissue(11, "globus pallidus interna (GPi)", 0.15, 40.0, 0.75, True, r2_hz=17.5),
    Tissue(12, "thalamus", 0.02, 20.0, 0.76, True, r2_hz=14.0),
    Tissue(13, "substantia nigra", 0.14, 38.0, 0.75, True, r2_hz=17.0),
    Tissue(14, "red nucleus", 0.12, 32.0, 0.75, True, r2_hz=15.0),
    Tissue(15, "subthalamic nucleus", 0.11, 35.0, 0.75, True, r2_hz=17.0),
    Tissue(16, "dentate nucleus", 0.12, 30.0, 0.75, True, r2_hz=13.0),
    Tissue(17, "nucleus accumbens", 0.04, 20.0, 0.8, True, r2_hz=12.5),
    Tissue(18, "veins", 0.40, 50.0, 0.8, True, r2_hz=16.0, sub_voxel_sources=False),
    Tissue(19, "calcification", -0.5, 80.0, 0.3, True, r2_hz=11.5),
    Tissue(20, "hemorrhage", 1.0, 100.0, 0.7, True, r2_hz=25.0, sub_voxel_sources=False),
)

#: Label index → name, for every label the phantom uses.
LABEL_NAMES: Dict[int, str] = {t.label: t.name for t in TISSUES}
#: Name → tissue.
BY_NAME: Dict[str, Tissue] = {t.name: t for t in TISSUES}


def label_of(name: str) -> int:
    """Label index of the tissue called ``name`` (KeyError naming the known tissues otherwise)."""
    try:
        return BY_NAME[name].label
    except KeyError:
        raise KeyError(f"no tissue {name!r}; tissues are {sorted(BY_NAME)}") from None
