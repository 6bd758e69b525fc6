from radgen.labels import CHEXPERT_14, CHEXPERT_5, mesh_to_chexpert, parse_mesh


def test_observation_lists():
    assert len(CHEXPERT_14) == 14 and len(set(CHEXPERT_14)) == 14
    assert set(CHEXPERT_5) <= set(CHEXPERT_14)


def test_parse_mesh_sorts_qualifiers():
    term = parse_mesh("Opacity/lung/base/left/mild")
    assert term.heading == "Opacity"
    assert term.locations == ("lung", "base")
    assert term.laterality == "left"
    assert term.severity == ("mild",)
    assert parse_mesh("Pleural Effusion/right/left/small").laterality == "bilateral"
    assert parse_mesh("Catheters, Indwelling").heading == "Catheters, Indwelling"


def test_mesh_to_chexpert():
    assert mesh_to_chexpert("normal") == {"No Finding": 1}
    assert mesh_to_chexpert("Cardiomegaly/borderline;Pulmonary Artery/enlarged") == {"Cardiomegaly": 1}
    assert mesh_to_chexpert("Opacity/lung/base/left/mild;Pleural Effusion/right/small") == {"Lung Opacity": 1, "Pleural Effusion": 1}
    assert mesh_to_chexpert("Costophrenic Angle/left/blunted") == {"Pleural Effusion": 1}
    assert mesh_to_chexpert("Catheters, Indwelling;Thickening/pleura/apex/bilateral") == {"Pleural Other": 1, "Support Devices": 1}
    # Findings outside the 14 observations: CheXpert calls that No Finding.
    assert mesh_to_chexpert("Scoliosis/mild") == {"No Finding": 1}
    assert mesh_to_chexpert("No Indexing") == {}
    assert mesh_to_chexpert("Catheters, Indwelling") == {"No Finding": 1, "Support Devices": 1}
