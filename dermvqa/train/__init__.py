"""dermvqa.train"""
