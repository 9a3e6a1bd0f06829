from django.http import HttpResponse


def _todo(*a, **k):
    return HttpResponse("not yet", status=501)


drift_list = repair = _todo
